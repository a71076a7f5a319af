//! Hostile test plugin: `on-ready` never returns (a busy loop). The host must interrupt it
//! (fuel or epoch deadline) and answer with the built-in policy.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyDecision};
use switchyard::policy::types::SessionInfo;

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+spin").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        // `black_box` keeps the loop a real loop the optimiser cannot reason away.
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Plugin);
