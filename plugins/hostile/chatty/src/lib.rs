//! Hostile test plugin: floods the host's log and counters on every decision. Each
//! `on-ready` logs one line of 64 KiB (`chatty: long ` then `x`s), then 200 short lines
//! (`chatty: line <call>.<i>`), adds to a counter with a 1 KiB name and to 10 counters with
//! names never used before (`chatty-<call>-<i>`), and releases the server (transaction
//! pooling). The host must cut the long line, rate-limit the lines, refuse the long name and
//! stop making counters at its cap, while traffic goes on.

use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(Chatty, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyAction, ReadyDecision, Reuse};
use bindings::switchyard::policy::host::{self, LogLevel};
use bindings::switchyard::policy::types::SessionInfo;

/// Calls so far in this instance.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Chatty;

impl Plugin for Chatty {
    const NAME: &'static str = "hostile-chatty";
    const SETTINGS: &'static [&'static str] = &[];
    fn new(_: &Settings<'_>) -> Result<Chatty, String> {
        Ok(Chatty)
    }
}

impl Guest for Chatty {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        host::log(LogLevel::Info, &format!("chatty: long {}", "x".repeat(64 * 1024)));
        for i in 0..200 {
            host::log(LogLevel::Info, &format!("chatty: line {call}.{i}"));
        }
        host::counter_add(&"n".repeat(1024), 1);
        for i in 0..10 {
            host::counter_add(&format!("chatty-{call}-{i}"), 1);
        }
        ReadyDecision {
            action: ReadyAction::Release,
            reuse: Reuse::Never,
        }
    }
}
