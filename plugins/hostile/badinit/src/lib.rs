//! Hostile test plugin: `init` always fails. At startup the proxy must refuse to start; on
//! reload the previous version must keep serving; the message reaches the operator.

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(BadInit, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyAction, ReadyDecision, Reuse};
use bindings::switchyard::policy::types::SessionInfo;

/// The exact error `init` returns.
pub const INIT_ERROR: &str = "refusing to start: bad settings";

struct BadInit;

impl Plugin for BadInit {
    const NAME: &'static str = "hostile-badinit";
    const SETTINGS: &'static [&'static str] = &[];
    fn new(_: &Settings<'_>) -> Result<BadInit, String> {
        Err(INIT_ERROR.to_string())
    }
}

impl Guest for BadInit {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        ReadyDecision {
            action: ReadyAction::Keep,
            reuse: Reuse::Never,
        }
    }
}
