//! The wasmtime engine: component model, pooling allocator with per-instance memory caps,
//! and epoch interruption driven by a ticker thread, so every call has a deadline.

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
/// Live instances across all plugins: a plugin keeps at most 64 idle, and calls run on the
/// few worker threads, so this is ample.
const MAX_INSTANCES: u32 = 256;

pub fn new_engine() -> wasmtime::Result<Engine> {
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
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map_err(wasmtime::Error::from)?;
    Ok(engine)
}
