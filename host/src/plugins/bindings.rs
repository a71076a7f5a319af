//! Host bindings generated from `wit/` (world `bundle`, which names every hook), and the
//! `host` interface plugins import. A component may export any subset of the hooks; see
//! `hooks.rs` for how the exported ones are found.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::instance::StoreState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bundle",
});

pub use self::exports::switchyard::policy::pool_mode::Reuse as WitReuse;
use self::switchyard::policy::types::SessionDetails;
pub use self::switchyard::policy::types::SessionInfo;

use self::switchyard::policy::host::LogLevel;

impl self::switchyard::policy::types::Host for StoreState {}

impl self::switchyard::policy::host::Host for StoreState {
    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: i64) {
        self.counters.add(&name, delta);
    }

    fn monotonic_now_ns(&mut self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn current_session(&mut self) -> Option<SessionDetails> {
        self.session.as_deref().map(SessionDetails::from)
    }
}

/// Counters plugins keep through `host.counter-add`, shown by the admin console. Shared by
/// every instance of a plugin, and carried over when a reload replaces the plugin.
#[derive(Default)]
pub struct PluginCounters {
    values: Mutex<std::collections::BTreeMap<String, i64>>,
    /// Calls to `counter-add`, to spot a plugin that calls it on every decision.
    pub updates: AtomicU64,
}

impl PluginCounters {
    fn add(&self, name: &str, delta: i64) {
        self.updates.fetch_add(1, Ordering::Relaxed);
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let full = values.len() >= 256; // bounds the names a plugin can create
        match values.get_mut(name) {
            Some(v) => *v = v.saturating_add(delta),
            None if !full => {
                values.insert(name.to_string(), delta);
            }
            None => {}
        }
    }

    pub fn snapshot(&self) -> Vec<(String, i64)> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// The session a hook call is about, for `host.current-session`.
pub type CallSession = Option<Arc<crate::policy::SessionDetails>>;
