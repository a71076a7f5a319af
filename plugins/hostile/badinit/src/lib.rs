//! Hostile test plugin: `init` always fails. At startup the proxy must refuse to start; on
//! reload the previous version must keep serving; the message reaches the operator.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyAction, ReadyDecision, Reuse};
use switchyard::policy::types::SessionInfo;

/// The exact error `init` returns.
pub const INIT_ERROR: &str = "refusing to start: bad settings";

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Err(INIT_ERROR.to_string())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+badinit").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        ReadyDecision {
            action: ReadyAction::Keep,
            reuse: Reuse::Never,
        }
    }
}

export!(Plugin);
