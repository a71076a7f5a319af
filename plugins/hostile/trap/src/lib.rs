//! Hostile test plugin: `on-ready` panics. On wasm32-wasip2 the panic message goes to stderr
//! (the host's log), then the instance traps (`unreachable`). The host must survive the trap
//! and answer with the built-in policy.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyAction};
use switchyard::policy::types::SessionInfo;

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+trap").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(session: SessionInfo, statements: u32) -> ReadyAction {
        panic!(
            "hostile trap plugin: deliberate panic in on-ready (session {}, {statements} statements)",
            session.id
        );
    }
}

export!(Plugin);
