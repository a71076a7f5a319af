//! The wasmtime engine: component model, pooling allocator with per-instance memory caps,
//! and epoch interruption driven by a ticker thread, so every call has a deadline.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick; call deadlines are counted in ticks.
pub const TICK: Duration = Duration::from_millis(1);
/// Budget of one hook call: 10 ticks, so 9 to 10 ms. Calls take microseconds; the margin is
/// for a worker thread descheduled mid-call on a busy machine, which must not count as a
/// runaway plugin.
pub const CALL_DEADLINE_TICKS: u64 = 10;
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
