//! The plugin host: the only module that names wasmtime. It loads WebAssembly components
//! (`switchyard:policy` worlds, see `wit/`), checks which hooks they export, runs their
//! `init`, and answers hook calls from the rest of the proxy in the proxy's own types.
//!
//! Rules kept here (see ARCHITECTURE.md): a plugin decides, the host does all I/O; every
//! call runs under an epoch deadline and a memory cap; a failing call is answered by the
//! built-in policy and never closes a session; an instance that failed is never reused.

mod bindings;
mod engine;
mod instance;
mod stdio;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use switchyard_protocol::TransactionStatus;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use self::bindings::{PoolModePlugin, PoolModePluginPre, SessionInfo, TxStatus, WitReadyAction};
pub use self::instance::CallError;
use self::instance::{Instances, StoreState};
use crate::config::{Config, HookKind, PluginConfig};
use crate::policy::pool_mode::{ReadyAction, ReadyFacts};

/// Why a plugin could not be loaded; the proxy does not start (or, on reload, keeps the
/// previous version).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {name:?}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {name:?}: {path} is not a valid component: {reason}")]
    Compile {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name:?}: does not fit this proxy's interface (switchyard:policy@0.1.0): {reason}")]
    Link { name: String, reason: String },
    #[error("plugin {name:?}: init failed: {message}")]
    Init { name: String, message: String },
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// First 12 hex digits of the component's SHA-256.
    pub hash: String,
    pub version: String,
    pub hooks: Vec<HookKind>,
    pub loaded_at: SystemTime,
    instances: Instances,
}

/// Call statistics of a plugin, for `SHOW PLUGINS`.
pub struct PluginReport {
    pub calls: u64,
    pub failures: u64,
    pub instantiations: u64,
    pub p50: Option<Duration>,
    pub counters: Vec<(String, i64)>,
}

impl Plugin {
    pub fn report(&self) -> PluginReport {
        let s = &self.instances.stats;
        PluginReport {
            calls: s.calls.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            instantiations: s.instantiations.load(Ordering::Relaxed),
            p50: s.p50(),
            counters: self.instances.counters.snapshot(),
        }
    }

    /// The `pool-mode` hook: what to do with the session's server at a ReadyForQuery.
    pub fn on_ready(&self, session: &mut SessionFacts, facts: ReadyFacts) -> Result<ReadyAction, CallError> {
        session.info.tx_status = match facts.status {
            TransactionStatus::Idle => TxStatus::Idle,
            TransactionStatus::InTransaction => TxStatus::InTransaction,
            TransactionStatus::Failed => TxStatus::Failed,
        };
        session.info.holds_server_state = facts.holds_server_state;
        let action = self.instances.call(|i| {
            i.bindings.switchyard_policy_pool_mode().call_on_ready(
                &mut i.store,
                &session.info,
                facts.statements,
            )
        })?;
        Ok(match action {
            WitReadyAction::Release => ReadyAction::Release,
            WitReadyAction::Keep => ReadyAction::Keep,
            WitReadyAction::RefuseTransaction(message) => ReadyAction::RefuseTransaction(message),
        })
    }
}

/// What hooks learn about a session, kept per session so a call copies no strings it does
/// not have to.
pub struct SessionFacts {
    info: SessionInfo,
}

impl SessionFacts {
    pub fn new(id: u32, user: &str, database: &str, application_name: &str) -> SessionFacts {
        SessionFacts {
            info: SessionInfo {
                id,
                user: user.to_string(),
                database: database.to_string(),
                application_name: application_name.to_string(),
                tx_status: TxStatus::Idle,
                holds_server_state: false,
            },
        }
    }
}

/// All loaded plugins, and which serves which hook for which database.
pub struct PluginHost {
    plugins: Vec<Arc<Plugin>>,
    pool_mode: HashMap<String, Arc<Plugin>>,
}

impl PluginHost {
    /// Compiles, links and initialises every configured plugin (blocking: call it off the
    /// async workers). Any failure is an error naming the plugin.
    pub fn load(config: &Config) -> Result<PluginHost, PluginError> {
        let mut host = PluginHost {
            plugins: Vec::new(),
            pool_mode: HashMap::new(),
        };
        if config.plugins.is_empty() {
            return Ok(host);
        }
        let engine = engine::new_engine().map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        for (name, plugin_config) in &config.plugins {
            let plugin = Arc::new(load_one(&engine, name, plugin_config)?);
            tracing::info!(plugin = %name, version = %plugin.version, hash = %plugin.hash, hooks = ?plugin.hooks, "plugin loaded");
            for db in config.databases.keys() {
                if plugin_config.serves(HookKind::PoolMode, db) {
                    host.pool_mode.insert(db.clone(), plugin.clone());
                }
            }
            host.plugins.push(plugin);
        }
        Ok(host)
    }

    /// The plugin deciding pool mode for `database`, if any.
    pub fn pool_mode(&self, database: &str) -> Option<Arc<Plugin>> {
        self.pool_mode.get(database).cloned()
    }

    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }
}

fn load_one(engine: &Engine, name: &str, config: &PluginConfig) -> Result<Plugin, PluginError> {
    let path: &Path = config.path.get_ref();
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let hash = format!("{:x}", Sha256::digest(&bytes))[..12].to_string();
    let component = Component::new(engine, &bytes).map_err(|e| PluginError::Compile {
        name: name.to_string(),
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    })?;
    let link = |e: wasmtime::Error| PluginError::Link {
        name: name.to_string(),
        reason: format!("{e:#}"),
    };
    let mut linker: Linker<StoreState> = Linker::new(engine);
    PoolModePlugin::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(&mut linker, |s| s)
        .map_err(link)?;
    stdio::add_to_linker(&mut linker).map_err(link)?;
    // Everything else a component imports (files, sockets, environment, ...) traps.
    linker.define_unknown_imports_as_traps(&component).map_err(link)?;
    let pre = linker.instantiate_pre(&component).map_err(link)?;
    let pre = PoolModePluginPre::new(pre).map_err(link)?;
    let instances = Instances::new(name, engine.clone(), pre, config.settings_text());
    let mut first = match instances.instantiate() {
        Ok(Ok(i)) => i,
        Ok(Err(message)) => {
            return Err(PluginError::Init {
                name: name.to_string(),
                message,
            })
        }
        Err(e) => {
            return Err(PluginError::Init {
                name: name.to_string(),
                message: format!("{e:#}"),
            })
        }
    };
    let version = first
        .bindings
        .switchyard_policy_lifecycle()
        .call_version(&mut first.store)
        .map_err(|e| PluginError::Init {
            name: name.to_string(),
            message: format!("version(): {e:#}"),
        })?;
    instances.park(first);
    Ok(Plugin {
        name: name.to_string(),
        path: path.to_path_buf(),
        hash,
        version,
        hooks: config.hooks.clone(),
        loaded_at: SystemTime::now(),
        instances,
    })
}
