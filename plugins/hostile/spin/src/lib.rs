//! Hostile test plugin: `on-ready` never returns (a busy loop). The host must interrupt it
//! (fuel or epoch deadline) and answer with the built-in policy.

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(Spin, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyDecision};
use bindings::switchyard::policy::types::SessionInfo;

struct Spin;

impl Plugin for Spin {
    const NAME: &'static str = "hostile-spin";
    const SETTINGS: &'static [&'static str] = &[];
    fn new(_: &Settings<'_>) -> Result<Spin, String> {
        Ok(Spin)
    }
}

impl Guest for Spin {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        // `black_box` keeps the loop a real loop the optimiser cannot reason away.
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}
