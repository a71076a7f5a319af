//! Hostile test plugin built against an INCOMPATIBLE copy of the WIT contract (`./wit`:
//! package `switchyard:policy@0.0.1` instead of `@0.1.0`, and an older `on-ready` signature,
//! see the header of `wit/types.wit`). Loading it into the real host must fail at link time
//! (missing import `switchyard:policy/host@0.0.1`, missing exports `...@0.1.0`), with a clear
//! error, and never serve.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    // The plugin's OWN wit directory, not ../../../wit.
    path: "wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::Guest as PoolMode;
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::SessionInfo;

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        host::log(LogLevel::Info, "oldwit: built against switchyard:policy@0.0.1");
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+oldwit").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(_session: SessionInfo) -> bool {
        true
    }
}

export!(Plugin);
