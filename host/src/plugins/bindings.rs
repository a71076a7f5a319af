//! Host bindings generated from `wit/` (world `bundle`, which names every hook), and the
//! `host` interface plugins import. A component may export any subset of the hooks; see
//! `hooks.rs` for how the exported ones are found.

use std::sync::Arc;

use super::instance::StoreState;
use super::output::capped_line;

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
        if !self.log.admit(plugin) {
            return;
        }
        let message = capped_line(&message);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: i64) {
        self.counters.add(&self.plugin, &name, delta);
    }

    fn monotonic_now_ns(&mut self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn current_session(&mut self) -> Option<SessionDetails> {
        self.session.as_deref().map(SessionDetails::from)
    }
}

/// The session a hook call is about, for `host.current-session`.
pub type CallSession = Option<Arc<crate::policy::SessionDetails>>;
