//! What every session shares: the configuration turned into runtime objects (users with their
//! verifiers, database routes), the pools created on first use, the cancel registry, the TLS
//! acceptor and the shutdown signal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::{ScramVerifier, UserAuth};
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::config::ConfigError;
use crate::net::{client_tls_acceptor, server_tls_connector, TlsError};
use crate::plugins::{PluginError, PluginRegistry, ReloadReport};
use crate::pool::{PauseGate, Pool, PoolSettings};
use crate::server::{connect, query_row, ConnectParams, ServerError};
use crate::topology::{Cluster, ProbeSettings, Topology};

/// How to reach one configured database.
pub struct DatabaseRoute {
    pub server_database: String,
    pub cluster: Arc<Cluster>,
    pub pause: Arc<PauseGate>,
    pub settings: PoolSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("users.{user}: {message}")]
    User { user: String, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
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
    /// Sections that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}

pub struct ProxyState {
    pub config: Arc<Config>,
    source: Option<ConfigSource>,
    pub users: HashMap<String, Arc<UserAuth>>,
    pub databases: HashMap<String, DatabaseRoute>,
    pub topology: Topology,
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    pub cancels: Arc<CancelRegistry>,
    /// Shared with the clusters, which ask their `health` and `switchover` plugins.
    pub plugins: Arc<PluginRegistry>,
    /// Serialises reloads (SIGHUP, admin RELOAD, the plugin file watcher).
    reloading: tokio::sync::Mutex<()>,
    pub tls: Option<TlsAcceptor>,
    /// Clients connected now (for `max_client_conn`).
    pub clients: AtomicUsize,
    /// Becomes true when the proxy is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Verifier used to fail unknown users the same way as wrong passwords.
    pub decoy_verifier: ScramVerifier,
    /// Users found by `auth_query`: name → (stored password, user, when looked up).
    auth_cache: Mutex<HashMap<String, CachedUser>>,
}

struct CachedUser {
    stored: Option<String>,
    user: Option<Arc<UserAuth>>,
    at: Instant,
}

/// `auth_query` could not run.
#[derive(Debug, thiserror::Error)]
#[error("auth_query failed: {0}")]
pub struct AuthQueryError(#[from] ServerError);

impl ProxyState {
    /// Builds the runtime objects, loading plugins (blocking: compiling a plugin can take
    /// seconds, so call it before the runtime serves clients or off its workers).
    pub fn new(
        config: Config,
        source: Option<ConfigSource>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ProxyState, StateError> {
        let mut users = HashMap::new();
        for (name, user) in &config.users {
            let auth = UserAuth::from_config(name, user).map_err(|message| StateError::User {
                user: name.clone(),
                message,
            })?;
            users.insert(name.clone(), Arc::new(auth));
        }
        let server_tls = server_tls_connector(config.pool.server_tls, config.pool.server_tls_ca.as_deref())?;
        let plugins = Arc::new(PluginRegistry::start(&config)?);
        let mut topology = Topology::default();
        for (name, cluster) in &config.clusters {
            let probe = cluster.probe_user.as_ref().map(|u| ProbeSettings {
                user: users[u.get_ref()].clone(),
                database: cluster.probe_database.clone(),
                interval: cluster.probe_interval,
                timeout: cluster.probe_timeout,
                tls: server_tls.clone(),
            });
            if probe.is_none() && cluster.nodes.len() > 1 {
                tracing::warn!(cluster = %name, "no probe_user: the nodes are not probed, the configured primary gets all traffic");
            }
            let cluster = Cluster::new(name, cluster, probe).with_plugins(plugins.clone());
            topology.clusters.insert(name.clone(), Arc::new(cluster));
        }
        let mut databases = HashMap::new();
        for (name, db) in &config.databases {
            let settings = PoolSettings {
                mode: config.pool_mode(db),
                size: config.pool_size(db),
                connect_timeout: config.pool.connect_timeout,
                query_wait_timeout: config.pool.query_wait_timeout,
                idle_timeout: config.pool.idle_timeout,
                lifetime: config.pool.lifetime,
                max_prepared_statements: config.pool.max_prepared_statements,
                tls: server_tls.clone(),
            };
            databases.insert(
                name.clone(),
                DatabaseRoute {
                    server_database: db.dbname.clone().unwrap_or_else(|| name.clone()),
                    cluster: topology.clusters[db.cluster.get_ref()].clone(),
                    pause: Arc::default(),
                    settings,
                },
            );
        }
        let tls = match (&config.proxy.tls_cert, &config.proxy.tls_key) {
            (Some(cert), Some(key)) => Some(client_tls_acceptor(cert, key)?),
            _ => None,
        };
        Ok(ProxyState {
            config: Arc::new(config),
            source,
            reloading: tokio::sync::Mutex::new(()),
            users,
            databases,
            topology,
            pools: Mutex::new(HashMap::new()),
            cancels: Arc::new(CancelRegistry::default()),
            plugins,
            tls,
            clients: AtomicUsize::new(0),
            shutdown,
            decoy_verifier: ScramVerifier::from_password(&format!("{:x}", rand::random::<u128>())),
            auth_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The pool for (database, user), created on first use.
    pub fn pool(&self, database: &str, user: &Arc<UserAuth>) -> Option<Arc<Pool>> {
        let route = self.databases.get(database)?;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = pools
            .entry((database.to_string(), user.name.clone()))
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    format!("{database}/{}", user.name),
                    user.clone(),
                    route.server_database.clone(),
                    route.cluster.clone(),
                    route.pause.clone(),
                    route.settings.clone(),
                ))
            });
        pool.update_user(user);
        Some(pool.clone())
    }

    /// A user from `[users]`, or else from `auth_query` (cached for `cache_ttl`).
    pub async fn lookup_user(
        &self,
        name: &str,
        database: &str,
    ) -> Result<Option<Arc<UserAuth>>, AuthQueryError> {
        if let Some(u) = self.users.get(name) {
            return Ok(Some(u.clone()));
        }
        let Some(aq) = &self.config.auth_query else {
            return Ok(None);
        };
        {
            let cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(name).filter(|c| c.at.elapsed() < aq.cache_ttl) {
                return Ok(c.user.clone());
            }
        }
        // Any route reaches the cluster; the client's database is preferred.
        let Some(route) = self
            .databases
            .get(database)
            .or_else(|| self.databases.values().next())
        else {
            return Ok(None);
        };
        let auth_user = &self.users[aq.user.get_ref()];
        let deadline = Instant::now() + route.cluster.hold_timeout;
        let Some((_, addr)) = route.cluster.wait_for_primary(deadline).await else {
            return Err(AuthQueryError(ServerError::ConnectTimeout {
                addr: route.cluster.nodes[0].clone(),
            }));
        };
        let params = ConnectParams {
            addr,
            user: &auth_user.name,
            database: aq.database.as_deref().unwrap_or(&route.server_database),
            secret: auth_user.server_secret(),
            options: &[],
            tls: &route.settings.tls,
            timeout: route.settings.connect_timeout,
        };
        let mut conn = connect(&params).await?;
        let row = query_row(&mut conn, &aq.query, &[name]).await?;
        let stored = row.and_then(|r| r.into_iter().nth(1).flatten());
        let mut cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the same user object while the password is unchanged: it holds the SCRAM
        // pass-through key learnt from earlier logins.
        let user = match cache.get(name) {
            Some(c) if c.stored == stored => c.user.clone(),
            _ => match stored.as_deref().map(|s| UserAuth::from_stored(name, s)) {
                Some(Ok(u)) => Some(Arc::new(u)),
                Some(Err(e)) => {
                    tracing::warn!(user = name, error = %e, "auth_query returned an unusable password");
                    None
                }
                None => None,
            },
        };
        cache.insert(
            name.to_string(),
            CachedUser {
                stored,
                user: user.clone(),
                at: Instant::now(),
            },
        );
        Ok(user)
    }

    /// Re-reads the configuration file and applies its `[plugins]` section (SIGHUP and
    /// admin `RELOAD`). Other sections that changed are reported: they apply at restart.
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let source = self.source.as_ref().ok_or(ReloadError::NoFile)?;
        let state = self.clone();
        let path = source.path.clone();
        let started_text = source.text.clone();
        tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                source: e,
            })?;
            let config = Config::parse(&text, &path.display().to_string())?;
            let mut needs_restart = Config::changed_sections(&started_text, &text);
            needs_restart.retain(|s| s != "plugins");
            if !needs_restart.is_empty() {
                tracing::warn!(sections = ?needs_restart, "configuration changes outside [plugins] take effect at restart");
            }
            let plugins = state.plugins.reload(&config);
            Ok(Reloaded {
                plugins,
                needs_restart,
            })
        })
        .await
        .unwrap_or_else(|e| Err(ReloadError::Panicked(e.to_string())))
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

    pub fn all_pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
