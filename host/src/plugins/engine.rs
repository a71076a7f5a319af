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
/// Live instances across all plugins.
const MAX_INSTANCES: u32 = 1000;

pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 2)
        .max_memory_size(MAX_MEMORY);
    let mut config = Config::new();
    config
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
