//! The active plugin set and its replacement while traffic flows. Each new set is installed
//! in the policy facade (`policy::Policies`) as an `Assignment` of plugins to hooks;
//! sessions keep the hook they started a transaction with, so a transaction in flight
//! finishes on the version it began with and the next one uses the new version. A reload loads only what changed (component bytes,
//! settings or hooks); a plugin that fails to load leaves its previous version serving, and
//! the reason is kept for `SHOW PLUGINS` and the `RELOAD` answer.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::output::PluginCounters;
use super::{ComponentFile, Loader, Plugin, PluginError};
use crate::config::{Config, HookKind};
use crate::policy::{Assignment, Policies};

/// One generation of the plugin set. Which plugin serves which hook for which database
/// (session hooks) or cluster (topology hooks) is the policy facade's [`Assignment`],
/// built from the same generation and installed with it.
#[derive(Default)]
pub struct PluginHost {
    /// Changes with every reload that changed anything.
    generation: u64,
    plugins: Vec<Arc<Plugin>>,
}

impl PluginHost {
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The set, and who serves each hook of each database and cluster.
    fn build(generation: u64, config: &Config, plugins: Vec<Arc<Plugin>>) -> (PluginHost, Assignment) {
        let mut assignment = Assignment::new(generation);
        for plugin in &plugins {
            let plugin_config = &config.plugins[&plugin.name];
            for db in config.databases.keys() {
                if plugin_config.serves(HookKind::PoolMode, db) {
                    assignment.serve_pool_mode(db, plugin.clone());
                }
                if plugin_config.serves(HookKind::Retry, db) {
                    assignment.serve_retry(db, plugin.clone());
                }
                if plugin_config.serves(HookKind::Router, db) {
                    assignment.serve_router(db, plugin.clone());
                }
            }
            for cluster in config.clusters.keys() {
                if plugin_config.serves_cluster(HookKind::Health, cluster) {
                    assignment.serve_health(cluster, plugin.clone());
                }
                if plugin_config.serves_cluster(HookKind::Switchover, cluster) {
                    assignment.serve_switchover(cluster, plugin.clone());
                }
            }
        }
        (PluginHost { generation, plugins }, assignment)
    }
}

/// What a reload did to one plugin.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// A new version serves.
    Loaded {
        version: String,
        hash: String,
        origin: &'static str,
    },
    /// Same file, settings and hooks: the running version stays.
    Unchanged,
    /// The new version failed; the previous one (if any) keeps serving.
    Failed(String),
    /// No longer configured: its hooks fall back to the built-in policies.
    Removed,
}

/// One line per configured (or removed) plugin.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub plugins: Vec<(String, ReloadOutcome)>,
}

impl ReloadReport {
    pub fn failures(&self) -> usize {
        self.plugins
            .iter()
            .filter(|(_, o)| matches!(o, ReloadOutcome::Failed(_)))
            .count()
    }
}

/// A failed load, kept until the plugin loads again.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub at: SystemTime,
    pub reason: String,
}

pub struct PluginRegistry {
    cache_dir: Option<PathBuf>,
    /// Created with the first plugin (no engine, no ticker thread without plugins).
    loader: Mutex<Option<Arc<Loader>>>,
    current: ArcSwap<PluginHost>,
    /// The facade the proxy's decisions go through; each new set is installed there.
    policies: Arc<Policies>,
    /// The configuration the current set was built from (file-change reloads reuse it).
    config: Mutex<Arc<Config>>,
    failures: Mutex<BTreeMap<String, LoadFailure>>,
    /// Plugin counters by plugin name, carried from one version to the next.
    counters: Mutex<HashMap<String, Arc<PluginCounters>>>,
    /// Serialises reloads (SIGHUP, RELOAD and the file watcher may race).
    reloading: Mutex<()>,
}

impl PluginRegistry {
    /// Loads every configured plugin; any failure is an error naming the plugin (the proxy
    /// does not start with a plugin missing). Blocking: call it off the async workers.
    pub fn start(config: &Config) -> Result<PluginRegistry, PluginError> {
        let registry = PluginRegistry {
            cache_dir: config.proxy.plugin_cache_dir.clone(),
            loader: Mutex::new(None),
            current: ArcSwap::from_pointee(PluginHost::default()),
            policies: Arc::new(Policies::default()),
            config: Mutex::new(Arc::new(config.clone())),
            failures: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(HashMap::new()),
            reloading: Mutex::new(()),
        };
        let mut plugins = Vec::new();
        for (name, plugin_config) in &config.plugins {
            let loader = registry.loader()?;
            let file = ComponentFile::read(name, plugin_config)?;
            let plugin = loader.load(name, plugin_config, file, registry.counters_for(name))?;
            prewarm(&plugin, config);
            log_loaded(&plugin);
            plugins.push(Arc::new(plugin));
        }
        registry.publish(PluginHost::build(1, config, plugins));
        Ok(registry)
    }

    /// The facade every decision goes through, kept current by this registry.
    pub fn policies(&self) -> Arc<Policies> {
        self.policies.clone()
    }

    /// The active set (for `SHOW PLUGINS` and the metrics).
    pub fn current(&self) -> arc_swap::Guard<Arc<PluginHost>> {
        self.current.load()
    }

    /// Makes a new set active, and its assignment the facade's.
    fn publish(&self, (host, assignment): (PluginHost, Assignment)) {
        self.current.store(Arc::new(host));
        self.policies.install(assignment);
    }

    /// The last failed load of `name`, while its previous version (or none) serves.
    pub fn failure(&self, name: &str) -> Option<LoadFailure> {
        lock(&self.failures).get(name).cloned()
    }

    /// Every failed load not yet superseded, by plugin name.
    pub fn failures(&self) -> Vec<(String, LoadFailure)> {
        lock(&self.failures)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Component files of the applied configuration, for the change watcher.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        lock(&self.config)
            .plugins
            .values()
            .map(|p| p.path.get_ref().clone())
            .collect()
    }

    /// Applies `config`'s `[plugins]`: loads what changed, keeps what did not, drops what
    /// is gone, then swaps the set in one step. Blocking: call it off the async workers.
    pub fn reload(&self, config: &Config) -> ReloadReport {
        let _one_at_a_time = lock(&self.reloading);
        let old = self.current.load_full();
        let mut report = ReloadReport::default();
        let mut plugins = Vec::new();
        let mut changed = false;
        for (name, plugin_config) in &config.plugins {
            let previous = old.plugins.iter().find(|p| &p.name == name);
            let outcome = match self.load_if_changed(name, plugin_config, previous) {
                Ok(None) => {
                    // The configuration names the serving version again: an earlier failed
                    // load of another one no longer applies.
                    lock(&self.failures).remove(name);
                    plugins.push(previous.expect("unchanged implies loaded").clone());
                    ReloadOutcome::Unchanged
                }
                Ok(Some(plugin)) => {
                    prewarm(&plugin, config);
                    log_loaded(&plugin);
                    lock(&self.failures).remove(name);
                    let outcome = ReloadOutcome::Loaded {
                        version: plugin.version.clone(),
                        hash: plugin.hash.clone(),
                        origin: plugin.origin,
                    };
                    plugins.push(Arc::new(plugin));
                    changed = true;
                    outcome
                }
                Err(e) => {
                    let reason = e.to_string();
                    match previous {
                        Some(p) => {
                            tracing::error!(plugin = %name, error = %reason, version = %p.version, hash = %p.hash, "plugin reload failed; the previous version keeps serving");
                            plugins.push(p.clone());
                        }
                        None => {
                            tracing::error!(plugin = %name, error = %reason, "plugin load failed; its hooks use the built-in policies")
                        }
                    }
                    lock(&self.failures).insert(
                        name.clone(),
                        LoadFailure {
                            at: SystemTime::now(),
                            reason: reason.clone(),
                        },
                    );
                    ReloadOutcome::Failed(reason)
                }
            };
            report.plugins.push((name.clone(), outcome));
        }
        for gone in old
            .plugins
            .iter()
            .filter(|p| !config.plugins.contains_key(&p.name))
        {
            tracing::info!(plugin = %gone.name, "plugin removed from the configuration; built-in policies serve its hooks");
            lock(&self.failures).remove(&gone.name);
            report.plugins.push((gone.name.clone(), ReloadOutcome::Removed));
            changed = true;
        }
        // A changed database list or assignment rebuilds the map even with the same plugins.
        let applied = lock(&self.config).clone();
        changed |= plugin_assignment_changed(&applied, config);
        if changed {
            self.publish(PluginHost::build(old.generation + 1, config, plugins));
        }
        *lock(&self.config) = Arc::new(config.clone());
        report
    }

    /// Re-reads the component files of the applied configuration (a file changed).
    pub fn reload_files(&self) -> ReloadReport {
        let config = lock(&self.config).clone();
        self.reload(&config)
    }

    /// `Ok(None)` when `previous` is the same component with the same settings and hooks.
    fn load_if_changed(
        &self,
        name: &str,
        config: &crate::config::PluginConfig,
        previous: Option<&Arc<Plugin>>,
    ) -> Result<Option<Plugin>, PluginError> {
        let file = ComponentFile::read(name, config)?;
        if previous.is_some_and(|p| p.same_as(&file.sha256, config)) {
            return Ok(None);
        }
        let loader = self.loader()?;
        loader.load(name, config, file, self.counters_for(name)).map(Some)
    }

    fn loader(&self) -> Result<Arc<Loader>, PluginError> {
        let mut loader = lock(&self.loader);
        if let Some(l) = &*loader {
            return Ok(l.clone());
        }
        let l = Arc::new(Loader::new(self.cache_dir.as_deref())?);
        *loader = Some(l.clone());
        Ok(l)
    }

    fn counters_for(&self, name: &str) -> Arc<PluginCounters> {
        lock(&self.counters).entry(name.to_string()).or_default().clone()
    }
}

fn plugin_assignment_changed(a: &Config, b: &Config) -> bool {
    let assignment = |c: &Config| -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (name, p) in &c.plugins {
            for hook in &p.hooks {
                for db in c.databases.keys() {
                    if p.serves(*hook, db) {
                        v.push((format!("{hook}/{db}"), name.clone()));
                    }
                }
                for cluster in c.clusters.keys() {
                    if p.serves_cluster(*hook, cluster) {
                        v.push((format!("{hook}/cluster {cluster}"), name.clone()));
                    }
                }
            }
        }
        v
    };
    assignment(a) != assignment(b)
}

/// Instances made at load beyond the first: one per worker thread.
fn prewarm(plugin: &Plugin, config: &Config) {
    let workers = config.proxy.worker_threads();
    if let Err(e) = plugin.prewarm(workers.saturating_sub(1)) {
        tracing::warn!(plugin = %plugin.name, error = %e, "could not prewarm instances; calls will instantiate them");
    }
}

fn log_loaded(plugin: &Plugin) {
    tracing::info!(
        plugin = %plugin.name,
        version = %plugin.version,
        hash = %plugin.hash,
        hooks = ?plugin.hooks.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
        load_ms = plugin.load_time.as_millis() as u64,
        code = plugin.origin,
        "plugin loaded"
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
