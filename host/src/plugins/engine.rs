//! The wasmtime engine: component model, pooling allocator with per-instance memory caps,
//! and epoch interruption driven by a ticker thread, so every call has a deadline. The
//! ticker runs while plugin code may run and sleeps once none has for a while, so an idle
//! proxy is not woken a thousand times a second.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick; call deadlines are counted in ticks.
pub const TICK: Duration = Duration::from_millis(1);
/// First check of one hook call: after 10 ticks (9 to 10 ms of wall time). Calls take
/// microseconds. A call still running then is watched by CPU time (see `instance.rs`): a
/// worker thread descheduled mid-call on a busy machine is not a runaway plugin.
pub const CALL_DEADLINE_TICKS: u64 = 10;
/// After the first check, the call is checked every this many ticks...
pub const CHECK_TICKS: u64 = 5;
/// ... and interrupted when its thread spent this much CPU since the previous check.
pub const CHECK_CPU: Duration = Duration::from_micros(2500);
/// A call is interrupted after this many checks whatever its CPU use (about a second).
pub const MAX_CHECKS: u32 = 200;
/// Budget of `init` (a plugin may build tables): 200 ms.
pub const INIT_DEADLINE_TICKS: u64 = 200;
/// Linear memory a plugin instance may grow to.
pub const MAX_MEMORY: usize = 64 << 20;
/// Ticks with no plugin code running after which the ticker sleeps until the next call.
const IDLE_TICKS: u32 = 100;
/// Live instances across all plugins: a plugin keeps at most 64 idle, and calls run on the
/// few worker threads, so this is ample.
const MAX_INSTANCES: u32 = 256;

/// The engine and its epoch ticker.
pub fn new_engine() -> wasmtime::Result<(Engine, Arc<Ticker>)> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 2)
        .max_memory_size(MAX_MEMORY);
    let mut config = Config::new();
    // Reserve address space for the memory cap only (the default reserves 4 GiB plus guards
    // per memory slot, terabytes in all, which strict overcommit or `ulimit -v` refuse);
    // bounds checks become explicit, which costs plugins of this size nothing noticeable.
    config
        .memory_reservation(MAX_MEMORY as u64)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    let state = Arc::new(TickerState::default());
    let shared = state.clone();
    let thread = std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            let mut idle = 0;
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
                if shared.in_flight.load(SeqCst) > 0 {
                    idle = 0;
                    continue;
                }
                idle += 1;
                if idle < IDLE_TICKS {
                    continue;
                }
                // Announce the sleep, then look again: a call that started before the
                // announcement is seen here, one that starts after it sees the
                // announcement and wakes the thread (an unpark before the park is kept).
                shared.parked.store(true, SeqCst);
                if shared.in_flight.load(SeqCst) == 0 {
                    std::thread::park();
                }
                shared.parked.store(false, SeqCst);
                idle = 0;
            }
        })
        .map_err(wasmtime::Error::from)?
        .thread()
        .clone();
    Ok((engine, Arc::new(Ticker { state, thread })))
}

#[derive(Default)]
struct TickerState {
    /// Stretches of plugin code running now ([`Ticker::running`]).
    in_flight: AtomicUsize,
    /// The ticker is (about to be) asleep.
    parked: AtomicBool,
}

/// The epoch ticker's handle: plugin code runs only inside [`Ticker::running`], so its epoch
/// deadline keeps counting.
pub struct Ticker {
    state: Arc<TickerState>,
    thread: std::thread::Thread,
}

impl Ticker {
    /// Marks plugin code running until the guard is dropped; wakes the ticker if it sleeps.
    pub fn running(&self) -> Running<'_> {
        self.state.in_flight.fetch_add(1, SeqCst);
        if self.state.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Running(self)
    }
}

/// Plugin code may be running; see [`Ticker::running`].
pub struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_2s(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what} within 2 s");
            std::thread::sleep(TICK);
        }
    }

    /// With nothing running the ticker goes to sleep; a call wakes it, and it stays awake
    /// while the call lasts (past the idle stretch that would put it to sleep).
    #[test]
    fn the_ticker_sleeps_when_idle_and_wakes_for_a_call() {
        let (_engine, ticker) = new_engine().expect("engine");
        within_2s("asleep", || ticker.state.parked.load(SeqCst));
        let running = ticker.running();
        within_2s("awake", || !ticker.state.parked.load(SeqCst));
        std::thread::sleep(TICK * (IDLE_TICKS + 50));
        assert!(!ticker.state.parked.load(SeqCst), "asleep during a call");
        drop(running);
        within_2s("asleep again", || ticker.state.parked.load(SeqCst));
    }
}
