//! Hostile test plugin: `on-ready` panics. The panic message goes to stderr (the host's log),
//! then the instance traps (`unreachable`: wasm32-wasip2 cannot unwind). The host must survive
//! the trap and answer with the built-in policy.
//!
//! `init` installs a panic hook that only writes to stderr: std's default hook first reads
//! the environment (`RUST_BACKTRACE`), which traps before printing anything under a host that
//! gives plugins stdout/stderr and nothing else.

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
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+trap").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(session: SessionInfo, statements: u32) -> ReadyDecision {
        panic!(
            "hostile trap plugin: deliberate panic in on-ready (session {}, {statements} statements)",
            session.id
        );
    }
}

export!(Plugin);
