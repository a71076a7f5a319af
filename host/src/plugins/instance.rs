//! Instances of one loaded plugin: a pool of ready instances (never shared between tasks),
//! each call under an epoch deadline and the store's memory limit. An instance whose call
//! fails (trap, deadline, memory) is dropped, never reused; repeated failures open a circuit
//! breaker that keeps the plugin out of the path for a cool-down.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};

use super::bindings::CallSession;
use super::engine::{
    Running, Ticker, CALL_DEADLINE_TICKS, CHECK_CPU, CHECK_TICKS, INIT_DEADLINE_TICKS, MAX_CHECKS, MAX_MEMORY,
};
use super::hooks::{HookIndices, Hooks};
use super::output::{LogBudget, PluginCounters};
use super::stdio::Captured;

/// Consecutive failures that open the breaker.
const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker keeps the plugin out.
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(10);
/// Ready instances kept per plugin; more are dropped after use.
const MAX_IDLE_INSTANCES: usize = 64;
/// One call in this many is timed for the p50 (reading the clock twice per call would be a
/// noticeable share of a call that takes a few hundred nanoseconds).
const TIME_EVERY: u64 = 8;
/// Timed calls kept for the p50.
const RING: usize = 256;

/// What a store carries for the host functions of its instance.
pub struct StoreState {
    pub plugin: Arc<str>,
    pub limits: StoreLimits,
    pub output: Captured,
    pub counters: Arc<PluginCounters>,
    /// The plugin's log lines per second, shared by its instances.
    pub log: Arc<LogBudget>,
    pub started: Instant,
    /// The session the current call is about (for `host.current-session`).
    pub session: CallSession,
    /// The running call's deadline checks.
    overrun: Overrun,
}

/// Deadline checks of the running call: the epoch deadline measures wall time, which a
/// descheduled thread also spends; past it, a call is interrupted only if it keeps using
/// the CPU.
#[derive(Default)]
struct Overrun {
    checks: u32,
    /// Thread CPU time at the previous check.
    cpu_mark: Option<Duration>,
}

impl Overrun {
    fn check(&mut self) -> UpdateDeadline {
        self.checks += 1;
        let now = thread_cpu_time();
        let spinning = self
            .cpu_mark
            .is_some_and(|mark| now.saturating_sub(mark) >= CHECK_CPU);
        self.cpu_mark = Some(now);
        if spinning || self.checks > MAX_CHECKS {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(CHECK_TICKS)
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::MAX; // unknown: treat as spinning, the safe side
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

impl CallError {
    /// One line for `SHOW PLUGINS`: the outermost context (the guest's stderr, see
    /// `with_stderr`) and the root cause (the trap), without the wasm backtrace between.
    pub fn summary(&self) -> String {
        match self {
            CallError::Failed(e) => {
                let root = e.root_cause();
                match e.downcast_ref::<GuestStderr>() {
                    Some(stderr) => format!("plugin failed: {stderr}: {root}"),
                    None => format!("plugin failed: {root}"),
                }
            }
            other => other.to_string(),
        }
    }
}

/// Call statistics for `SHOW PLUGINS`; updated without locks.
pub struct CallStats {
    pub calls: AtomicU64,
    /// Decisions answered from a reusable earlier decision (no call).
    pub reused: AtomicU64,
    pub failures: AtomicU64,
    pub instantiations: AtomicU64,
    /// Durations in ns of recent timed calls (0: empty slot).
    recent: [AtomicU64; RING],
    next: AtomicU64,
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            calls: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            instantiations: AtomicU64::new(0),
            recent: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicU64::new(0),
        }
    }
}

impl CallStats {
    fn record(&self, nanos: u64) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % RING;
        self.recent[i].store(nanos.max(1), Ordering::Relaxed);
    }

    /// Median of recent timed calls.
    pub fn p50(&self) -> Option<Duration> {
        let mut recent: Vec<u64> = self
            .recent
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .filter(|&n| n > 0)
            .collect();
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
    pub hooks: Hooks,
    pub handle: wasmtime::component::Instance,
}

/// A compiled plugin and its instance pool.
pub struct Instances {
    name: Arc<str>,
    engine: Engine,
    ticker: Arc<Ticker>,
    pre: InstancePre<StoreState>,
    indices: HookIndices,
    settings: Vec<(String, String)>,
    idle: Mutex<Vec<Instance>>,
    pub counters: Arc<PluginCounters>,
    log: Arc<LogBudget>,
    pub stats: CallStats,
    consecutive_failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
    /// The last failed call of this version and when, for `SHOW PLUGINS`.
    last_error: Mutex<Option<(SystemTime, String)>>,
}

impl Instances {
    pub fn new(
        name: &str,
        engine: Engine,
        ticker: Arc<Ticker>,
        pre: InstancePre<StoreState>,
        indices: HookIndices,
        settings: Vec<(String, String)>,
        counters: Arc<PluginCounters>,
    ) -> Instances {
        Instances {
            name: name.into(),
            engine,
            ticker,
            pre,
            indices,
            settings,
            idle: Mutex::new(Vec::new()),
            counters,
            log: Arc::default(),
            stats: CallStats::default(),
            consecutive_failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    pub fn indices(&self) -> &HookIndices {
        &self.indices
    }

    /// Plugin code runs only while this guard lives (the epoch ticker counts its deadline).
    pub fn running(&self) -> Running<'_> {
        self.ticker.running()
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
            log: self.log.clone(),
            started: Instant::now(),
            session: None,
            overrun: Overrun::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut cx| Ok(cx.data_mut().overrun.check()));
        let running = self.running();
        store.set_epoch_deadline(INIT_DEADLINE_TICKS);
        let result = (|| -> wasmtime::Result<Result<(Hooks, _), String>> {
            let handle = self.pre.instantiate(&mut store)?;
            let hooks = self.indices.load(&mut store, &handle)?;
            let init = hooks.lifecycle.call_init(&mut store, &self.settings)?;
            Ok(init.map(|()| (hooks, handle)))
        })();
        drop(running);
        let state = store.data_mut();
        let stderr = state.output.flush(&self.name, &state.log);
        let result = result.map_err(|e| with_stderr(e, stderr))?;
        Ok(result.map(|(hooks, handle)| Instance { store, hooks, handle }))
    }

    /// Makes `n` fresh instances and pools them (those beyond the pool's cap are dropped),
    /// so the first calls after a load do not pay for instantiation.
    pub fn prewarm(&self, n: usize) -> wasmtime::Result<()> {
        for _ in 0..n {
            match self.instantiate()? {
                Ok(instance) => self.park(instance),
                Err(message) => return Err(wasmtime::format_err!("init: {message}")),
            }
        }
        Ok(())
    }

    /// Runs `f` on a pooled instance under the call deadline, with `session` visible to
    /// `host.current-session`.
    pub fn call<R>(
        &self,
        session: CallSession,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
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
        let running = self.running();
        instance.store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let state = instance.store.data_mut();
        state.session = session;
        state.overrun = Overrun::default();
        let n = self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = if n.is_multiple_of(TIME_EVERY) {
            let start = Instant::now();
            let result = f(&mut instance);
            self.stats.record(start.elapsed().as_nanos() as u64);
            result
        } else {
            f(&mut instance)
        };
        drop(running);
        let state = instance.store.data_mut();
        state.session = None;
        let stderr = if !state.output.stdout.is_empty() || !state.output.stderr.is_empty() {
            state.output.flush(&self.name, &state.log)
        } else {
            String::new()
        };
        state.log.settle(&self.name);
        match result {
            Ok(value) => {
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
                self.park(instance);
                Ok(value)
            }
            // The instance is dropped here: a store that trapped is never reused.
            Err(e) => Err(self.failed(CallError::Failed(with_stderr(e, stderr)))),
        }
    }

    /// Counts a failed call (also one whose answer the host could not use) toward the
    /// breaker and `SHOW PLUGINS`.
    pub fn failed(&self, error: CallError) -> CallError {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(plugin = &*self.name, error = %error, consecutive = n, "plugin call failed; built-in policy answers");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((SystemTime::now(), error.summary()));
        if n >= BREAKER_THRESHOLD {
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + BREAKER_COOL_DOWN);
            tracing::error!(plugin = &*self.name, cool_down = ?BREAKER_COOL_DOWN, "circuit breaker open: built-in policy serves alone");
        }
        error
    }

    /// The last failed call of this version and when.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
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

    /// Returns a ready instance to the pool (dropped when the pool is full).
    pub fn park(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }
}

/// What the guest wrote to stderr during a failed call: a panic's message, which the trap
/// itself does not carry.
#[derive(Debug)]
struct GuestStderr(String);

impl std::fmt::Display for GuestStderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stderr: {}", self.0)
    }
}

/// `error` with the guest's stderr as its context, if it wrote any.
fn with_stderr(error: wasmtime::Error, stderr: String) -> wasmtime::Error {
    if stderr.is_empty() {
        error
    } else {
        error.context(GuestStderr(stderr))
    }
}
