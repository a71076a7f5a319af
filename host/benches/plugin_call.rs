//! Cost of the plugin host on the data path, in a release build: one `pool-mode` hook call
//! with its small record (Rust guest, `reuse = "never"` so every decision is a call), a
//! decision the plugin declared reusable (what the bundled plugin costs per transaction),
//! the built-in policy they replace, and making a fresh instance (instantiation from the
//! pooling allocator plus `init`).
//!
//!     scripts/build-plugins && cargo bench -p switchyard --bench plugin_call
//!
//! `SWITCHYARD_BENCH_PLUGIN=/path/to/component.wasm` measures another pool-mode component
//! (e.g. the Python example) the same way (it must accept the `reuse` setting). After criterion's estimates, the bench prints
//! p50 and p99 per call from batches of 100 calls.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use switchyard::config::{Config, PoolMode};
use switchyard::plugins::{Plugin, PluginRegistry};
use switchyard::policy::hooks::PoolModeHook;
use switchyard::policy::pool_mode::{self, ReadyFacts};
use switchyard::policy::SessionFacts;
use switchyard_protocol::TransactionStatus;

fn component() -> PathBuf {
    std::env::var_os("SWITCHYARD_BENCH_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/pool-mode.wasm"))
}

fn load() -> (PluginRegistry, Arc<Plugin>, Arc<Plugin>) {
    let path = component();
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins",
        path.display()
    );
    let text = format!(
        r#"
[proxy]
plugin_cache_dir = ""
workers = 1
[clusters.main]
nodes = [{{ host = "127.0.0.1", port = 5432 }}]
[databases.app]
cluster = "main"
[databases.reuse]
cluster = "main"
[users.app]
password = "app"
[plugins.call]
path = "{path}"
hooks = ["pool-mode"]
databases = ["app"]
settings = {{ reuse = "never" }}
[plugins.reuse]
path = "{path}"
hooks = ["pool-mode"]
databases = ["reuse"]
"#,
        path = path.display()
    );
    let config = Config::parse(&text, "bench").expect("bench config");
    let registry = PluginRegistry::start(&config).expect("plugin loads");
    let named = |name: &str| {
        registry
            .current()
            .plugins()
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("plugin loaded")
    };
    let (call, reuse) = (named("call"), named("reuse"));
    (registry, call, reuse)
}

const FACTS: ReadyFacts = ReadyFacts {
    status: TransactionStatus::Idle,
    statements: 1,
    holds_server_state: false,
};

fn benches(c: &mut Criterion, plugin: &Plugin, reuse: &Plugin, session: &mut SessionFacts) {
    c.bench_function("pool-mode on-ready: plugin call", |b| {
        b.iter(|| {
            plugin
                .on_ready(black_box(&mut *session), PoolMode::Transaction, black_box(FACTS))
                .expect("call")
        })
    });
    c.bench_function("pool-mode on-ready: reused decision", |b| {
        b.iter(|| {
            reuse
                .on_ready(black_box(&mut *session), PoolMode::Transaction, black_box(FACTS))
                .expect("call")
        })
    });
    c.bench_function("pool-mode on-ready: built-in", |b| {
        b.iter(|| pool_mode::decide(black_box(PoolMode::Transaction), black_box(FACTS)))
    });
    c.bench_function("instantiate + init", |b| {
        b.iter(|| plugin.prewarm(1).expect("instantiate"))
    });
}

/// p50 and p99 of per-call time, from batches of `batch` calls (a clock read per call
/// would cost as much as the call).
fn percentiles(name: &str, batch: u32, mut f: impl FnMut()) {
    let mut per_call: Vec<f64> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    let p = |q: f64| per_call[((per_call.len() - 1) as f64 * q) as usize];
    println!("{name}: p50 {:.0} ns, p99 {:.0} ns per call", p(0.5), p(0.99));
}

fn main() {
    let (_registry, plugin, reuse) = load();
    let mut session = SessionFacts::new(1, "app", "app", "bench", "127.0.0.1:1".into(), false);
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &plugin, &reuse, &mut session);
    criterion.final_summary();
    println!("component: {}", component().display());
    percentiles("pool-mode on-ready (plugin call)", 100, || {
        black_box(
            plugin
                .on_ready(&mut session, PoolMode::Transaction, FACTS)
                .expect("call"),
        );
    });
    percentiles("pool-mode on-ready (reused decision)", 100, || {
        black_box(
            reuse
                .on_ready(&mut session, PoolMode::Transaction, FACTS)
                .expect("call"),
        );
    });
    percentiles("pool-mode on-ready (built-in)", 100, || {
        black_box(pool_mode::decide(PoolMode::Transaction, FACTS));
    });
    percentiles("instantiate + init", 10, || {
        plugin.prewarm(1).expect("instantiate")
    });
}
