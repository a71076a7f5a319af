//! The plugin host: the only module that names wasmtime. It loads WebAssembly components
//! (`switchyard:policy` worlds, see `wit/`), finds which hooks they export, runs their
//! `init`, answers hook calls from the rest of the proxy in the proxy's own types, and
//! replaces plugins while traffic flows (`PluginRegistry::reload`).
//!
//! Rules kept here (see ARCHITECTURE.md): a plugin decides, the host does all I/O; every
//! call runs under an epoch deadline and a memory cap; a failing call is answered by the
//! built-in policy and never closes a session; an instance that failed is never reused; a
//! plugin that fails to load leaves the version before it serving.

mod bindings;
mod cache;
mod convert;
mod engine;
mod failover;
mod hooks;
mod instance;
mod output;
mod registry;
mod routing;
mod stdio;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use self::bindings::{Bundle, SessionInfo, WitReuse};
use self::cache::{ArtifactCache, Origin};
use self::hooks::HookIndices;
pub use self::instance::CallError;
use self::instance::{Instances, StoreState};
use self::output::PluginCounters;
pub use self::registry::{PluginHost, PluginRegistry, ReloadOutcome, ReloadReport};
use crate::config::{HookKind, PluginConfig, PoolMode};
use crate::policy::hooks::{Decider, PoolModeHook};
use crate::policy::pool_mode::{ReadyAction, ReadyFacts};
use crate::policy::session::{reuse_key, REUSE_KEYS};
use crate::policy::{HookError, SessionFacts};
use switchyard_protocol::TransactionStatus;

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

/// A loaded plugin: one version of one `[plugins.NAME]` entry.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// First 12 hex digits of the component's SHA-256.
    pub hash: String,
    pub version: String,
    /// Hooks it serves (configured, and checked to be exported).
    pub hooks: Vec<HookKind>,
    /// Hooks the component exports.
    pub exports: Vec<HookKind>,
    pub loaded_at: SystemTime,
    /// Time to compile (or load from the cache), link and instantiate it.
    pub load_time: Duration,
    pub origin: &'static str,
    sha256: String,
    settings: Vec<(String, String)>,
    instances: Instances,
    /// Unique per loaded version (keys per-session reuse).
    serial: u64,
    /// Pool-mode decisions the plugin declared reusable by every session, by input.
    reusable: [OnceLock<ReadyAction>; REUSE_KEYS],
}

/// Serials of loaded plugin versions; 0 is never used.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Call statistics of a plugin, for `SHOW PLUGINS`.
pub struct PluginReport {
    pub calls: u64,
    /// Decisions answered from a reusable earlier decision, without a call.
    pub reused: u64,
    pub failures: u64,
    pub instantiations: u64,
    pub p50: Option<Duration>,
    pub counters: Vec<(String, i64)>,
    /// The last failed call of this version (trap, deadline, memory, refused init) and when.
    pub last_error: Option<(SystemTime, String)>,
}

impl Plugin {
    pub fn report(&self) -> PluginReport {
        let s = &self.instances.stats;
        PluginReport {
            calls: s.calls.load(Ordering::Relaxed),
            reused: s.reused.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            instantiations: s.instantiations.load(Ordering::Relaxed),
            p50: s.p50(),
            counters: self.instances.counters.snapshot(),
            last_error: self.instances.last_error(),
        }
    }

    /// Makes `n` fresh instances (instantiate and `init`) for the plugin's pool, beyond
    /// the one made at load: one per worker thread lets the first concurrent calls skip
    /// instantiation.
    pub fn prewarm(&self, n: usize) -> Result<(), CallError> {
        self.instances.prewarm(n).map_err(CallError::Failed)
    }

    /// Same component bytes, settings and hooks: a reload can keep this version.
    fn same_as(&self, sha256: &str, config: &PluginConfig) -> bool {
        self.sha256 == sha256 && self.settings == config.settings_text() && self.hooks == config.hooks
    }
}

impl Decider for Plugin {
    fn name(&self) -> &str {
        &self.name
    }
}

impl PoolModeHook for Plugin {
    /// The component's `pipelining.may-pipeline`; a component that does not export it
    /// (built before it existed, or choosing not to) never pipelines, whatever
    /// `[pool] pipeline` says.
    fn may_pipeline(&self, session: &mut SessionFacts, _setting: bool) -> Result<bool, HookError> {
        if !self.instances.indices().pipelines() {
            return Ok(false);
        }
        let info = SessionInfo {
            id: session.id(),
            tx_status: TransactionStatus::Idle.into(),
            holds_server_state: false,
            read_only: session.read_only(),
            last_commit_lsn: 0,
        };
        let decision = self.instances.call(Some(session.details().clone()), |i| {
            let hook = i
                .hooks
                .pipelining
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the component does not export pipelining"))?;
            hook.call_may_pipeline(&mut i.store, info)
        })?;
        Ok(decision)
    }

    /// A decision the plugin declared reusable is answered without calling it.
    fn on_ready(
        &self,
        session: &mut SessionFacts,
        _mode: PoolMode,
        facts: ReadyFacts,
    ) -> Result<ReadyAction, HookError> {
        let key = reuse_key(&facts, session.read_only());
        if let Some(action) = self.reusable[key].get() {
            self.instances.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(action.clone());
        }
        if let Some(action) = session.reuse.get(self.serial, key) {
            self.instances.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(action.clone());
        }
        let info = SessionInfo {
            id: session.id(),
            tx_status: facts.status.into(),
            holds_server_state: facts.holds_server_state,
            read_only: session.read_only(),
            last_commit_lsn: 0,
        };
        let decision = self.instances.call(Some(session.details().clone()), |i| {
            let hook = i
                .hooks
                .pool_mode
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the component does not export pool-mode"))?;
            hook.call_on_ready(&mut i.store, info, facts.statements)
        })?;
        let action = ReadyAction::from(decision.action);
        match decision.reuse {
            WitReuse::Never => {}
            WitReuse::Session => session.reuse.set(key, action.clone()),
            WitReuse::Always => {
                let _ = self.reusable[key].set(action.clone());
            }
        }
        Ok(action)
    }
}

/// Loads the component at `path` on its own, outside any configuration, as `switchyard
/// replay` and `test-plugin` do: the runtime rules of the proxy (fuel and epoch deadline,
/// memory cap, no network or files), `settings` passed to its `init`, every hook it
/// exports callable.
pub fn load_candidate(path: &std::path::Path, settings: &[(String, String)]) -> Result<Plugin, PluginError> {
    let name = path
        .file_stem()
        .map_or_else(|| "candidate".to_string(), |s| s.to_string_lossy().into_owned());
    let mut table = toml::Table::new();
    table.insert("path".into(), path.display().to_string().into());
    table.insert("hooks".into(), toml::Value::Array(Vec::new()));
    let values = settings
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect();
    table.insert("settings".into(), toml::Value::Table(values));
    let config: PluginConfig = toml::from_str(&table.to_string())
        .map_err(|e| PluginError::Engine(format!("candidate settings: {e}")))?;
    let loader = Loader::new(None)?;
    let file = ComponentFile::read(&name, &config)?;
    loader.load(&name, &config, file, Arc::new(PluginCounters::default()))
}

/// A component file as read from disk, with its SHA-256 (hex): read once per load or
/// reload, whether or not it turns out to have changed.
struct ComponentFile {
    bytes: Vec<u8>,
    sha256: String,
}

impl ComponentFile {
    fn read(name: &str, config: &PluginConfig) -> Result<ComponentFile, PluginError> {
        let path = config.path.get_ref();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        Ok(ComponentFile { bytes, sha256 })
    }
}

/// Compiles and instantiates plugins: the wasmtime engine (one per process, with its epoch
/// ticker) and the artifact cache.
pub struct Loader {
    engine: Engine,
    ticker: Arc<engine::Ticker>,
    cache: Option<ArtifactCache>,
}

impl Loader {
    pub fn new(cache_dir: Option<&std::path::Path>) -> Result<Loader, PluginError> {
        let (engine, ticker) = engine::new_engine().map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let cache = ArtifactCache::open(&engine, cache_dir);
        if let Some(c) = &cache {
            tracing::debug!(dir = %c.dir().display(), "plugin cache");
        }
        Ok(Loader {
            engine,
            ticker,
            cache,
        })
    }

    /// Compiles (or loads from the cache), links, instantiates and initialises one plugin
    /// from its component file. Blocking: call it off the async workers.
    fn load(
        &self,
        name: &str,
        config: &PluginConfig,
        file: ComponentFile,
        counters: Arc<PluginCounters>,
    ) -> Result<Plugin, PluginError> {
        let started = std::time::Instant::now();
        let path = config.path.get_ref();
        let ComponentFile { bytes, sha256 } = file;
        let compile = |e: wasmtime::Error| PluginError::Compile {
            name: name.to_string(),
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let (component, origin) = match &self.cache {
            Some(cache) => cache.load(&self.engine, &bytes, &sha256).map_err(compile)?,
            None => (
                Component::new(&self.engine, &bytes).map_err(compile)?,
                Origin::Compiled,
            ),
        };
        let link = |reason: String| PluginError::Link {
            name: name.to_string(),
            reason,
        };
        let mut linker: Linker<StoreState> = Linker::new(&self.engine);
        Bundle::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| link(format!("{e:#}")))?;
        let wasi_versions = stdio::imported_versions(&component, &self.engine);
        stdio::add_to_linker(&mut linker, &wasi_versions).map_err(|e| link(format!("{e:#}")))?;
        // Everything else a component imports (files, sockets, environment, ...) traps.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| link(format!("{e:#}")))?;
        let indices = HookIndices::new(&pre).map_err(|e| link(format!("{e:#}")))?;
        let exports = indices.exported();
        if let Some(missing) = config.hooks.iter().find(|h| !exports.contains(h)) {
            let exported: Vec<&str> = exports.iter().map(|h| h.as_str()).collect();
            return Err(link(format!(
                "hooks = [\"{missing}\"] is configured but the component does not export {} (it exports: {})",
                hooks::interface_name(*missing),
                if exported.is_empty() {
                    "no hooks".to_string()
                } else {
                    exported.join(", ")
                }
            )));
        }
        let instances = Instances::new(
            name,
            self.engine.clone(),
            self.ticker.clone(),
            pre,
            indices,
            config.settings_text(),
            counters,
        );
        let init = |message: String| PluginError::Init {
            name: name.to_string(),
            message,
        };
        let mut first = match instances.instantiate() {
            Ok(Ok(i)) => i,
            Ok(Err(message)) => return Err(init(message)),
            Err(e) => return Err(init(format!("{e:#}"))),
        };
        instances
            .indices()
            .check(&mut first.store, &first.handle)
            .map_err(|e| link(format!("{e:#}")))?;
        let version = {
            let _running = instances.running();
            first.store.set_epoch_deadline(engine::CALL_DEADLINE_TICKS);
            first
                .hooks
                .lifecycle
                .call_version(&mut first.store)
                .map_err(|e| init(format!("version(): {e:#}")))?
        };
        instances.park(first);
        Ok(Plugin {
            name: name.to_string(),
            path: path.to_path_buf(),
            hash: sha256[..12].to_string(),
            version,
            hooks: config.hooks.clone(),
            exports,
            loaded_at: SystemTime::now(),
            load_time: started.elapsed(),
            origin: origin.as_str(),
            sha256,
            settings: config.settings_text(),
            instances,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            reusable: Default::default(),
        })
    }
}
