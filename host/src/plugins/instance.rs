//! Instances of one loaded plugin: a pool of ready instances (never shared between tasks),
//! each call under an epoch deadline and the store's memory limit. An instance whose call
//! fails (trap, deadline, memory) is dropped, never reused; repeated failures open a circuit
//! breaker that keeps the plugin out of the path for a cool-down.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

use super::bindings::{PluginCounters, PoolModePlugin, PoolModePluginPre};
use super::engine::{CALL_DEADLINE_TICKS, INIT_DEADLINE_TICKS, MAX_MEMORY};
use super::stdio::Captured;

/// Consecutive failures that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker keeps the plugin out.
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(10);
/// Ready instances kept per plugin; more are dropped after use.
const MAX_IDLE_INSTANCES: usize = 64;

/// What a store carries for the host functions of its instance.
pub struct StoreState {
    pub plugin: Arc<str>,
    pub limits: StoreLimits,
    pub output: Captured,
    pub counters: Arc<PluginCounters>,
    pub started: Instant,
}

/// Why a call did not produce a decision; the caller falls back to the built-in policy.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin failed: {0:#}")]
    Failed(wasmtime::Error),
    #[error("plugin init refused a fresh instance: {0}")]
    Init(String),
    #[error("circuit breaker open after repeated failures")]
    BreakerOpen,
}

/// Call statistics for `SHOW PLUGINS`.
#[derive(Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub instantiations: AtomicU64,
    /// Recent call durations in ns (a small ring) for the p50 shown by the admin console.
    recent: Mutex<Vec<u64>>,
    next: AtomicU64,
}

impl CallStats {
    fn record(&self, nanos: u64) {
        const RING: usize = 256;
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % RING;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() < RING {
            recent.push(nanos);
        } else {
            recent[i] = nanos;
        }
    }

    /// Median of recent call durations.
    pub fn p50(&self) -> Option<Duration> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if recent.is_empty() {
            return None;
        }
        recent.sort_unstable();
        Some(Duration::from_nanos(recent[recent.len() / 2]))
    }
}

/// One live instance.
pub struct Instance {
    pub store: Store<StoreState>,
    pub bindings: PoolModePlugin,
}

/// A compiled plugin and its instance pool.
pub struct Instances {
    name: Arc<str>,
    engine: Engine,
    pre: PoolModePluginPre<StoreState>,
    settings: Vec<(String, String)>,
    idle: Mutex<Vec<Instance>>,
    pub counters: Arc<PluginCounters>,
    pub stats: CallStats,
    consecutive_failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

impl Instances {
    pub fn new(
        name: &str,
        engine: Engine,
        pre: PoolModePluginPre<StoreState>,
        settings: Vec<(String, String)>,
    ) -> Instances {
        Instances {
            name: name.into(),
            engine,
            pre,
            settings,
            idle: Mutex::new(Vec::new()),
            counters: Arc::default(),
            stats: CallStats::default(),
            consecutive_failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
        }
    }

    /// A fresh instance with `init` run; `Ok(Err(message))` when init refused.
    pub fn instantiate(&self) -> wasmtime::Result<Result<Instance, String>> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let state = StoreState {
            plugin: self.name.clone(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY)
                .instances(16)
                .build(),
            output: Captured::default(),
            counters: self.counters.clone(),
            started: Instant::now(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(INIT_DEADLINE_TICKS);
        let result = (|| -> wasmtime::Result<Result<PoolModePlugin, String>> {
            let bindings = self.pre.instantiate(&mut store)?;
            let init = bindings
                .switchyard_policy_lifecycle()
                .call_init(&mut store, &self.settings)?;
            Ok(init.map(|()| bindings))
        })();
        store.data_mut().output.flush(&self.name);
        Ok(result?.map(|bindings| Instance { store, bindings }))
    }

    /// Runs `f` on a pooled instance under the call deadline.
    pub fn call<R>(&self, f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>) -> Result<R, CallError> {
        if self.breaker_open() {
            return Err(CallError::BreakerOpen);
        }
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => match self.instantiate() {
                Ok(Ok(i)) => i,
                Ok(Err(message)) => return Err(self.failed(CallError::Init(message))),
                Err(e) => return Err(self.failed(CallError::Failed(e))),
            },
        };
        instance.store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let start = Instant::now();
        let result = f(&mut instance);
        self.stats.record(start.elapsed().as_nanos() as u64);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let output = &mut instance.store.data_mut().output;
        if !output.stdout.is_empty() || !output.stderr.is_empty() {
            output.flush(&self.name);
        }
        match result {
            Ok(value) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_IDLE_INSTANCES {
                    idle.push(instance);
                }
                Ok(value)
            }
            // The instance is dropped here: a store that trapped is never reused.
            Err(e) => Err(self.failed(CallError::Failed(e))),
        }
    }

    fn failed(&self, error: CallError) -> CallError {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(plugin = &*self.name, error = %error, consecutive = n, "plugin call failed; built-in policy answers");
        if n >= BREAKER_THRESHOLD {
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + BREAKER_COOL_DOWN);
            tracing::error!(plugin = &*self.name, cool_down = ?BREAKER_COOL_DOWN, "circuit breaker open: built-in policy serves alone");
        }
        error
    }

    fn breaker_open(&self) -> bool {
        if self.consecutive_failures.load(Ordering::Relaxed) < BREAKER_THRESHOLD {
            return false; // the common case, without a lock
        }
        let mut open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match *open {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *open = None;
                self.consecutive_failures.store(0, Ordering::Relaxed);
                tracing::info!(
                    plugin = &*self.name,
                    "circuit breaker closed: trying the plugin again"
                );
                false
            }
            None => false,
        }
    }

    /// Keeps a ready instance (the one that validated the plugin at load).
    pub fn park(&self, instance: Instance) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(instance);
    }
}
