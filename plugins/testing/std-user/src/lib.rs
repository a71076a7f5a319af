//! Test plugin written as a new plugin author would: it uses Rust's standard library with no
//! precautions, and so every WASI import std makes on wasm32-wasip2. Its `on-ready` (transaction
//! pooling) keeps a `HashMap` (whose seed comes from `wasi:random/insecure-seed`), reads
//! `Instant::now()` (`wasi:clocks/monotonic-clock`) and writes one line to stderr
//! (`wasi:cli/stderr`, `wasi:io/streams`) per call:
//! `std-user: on-ready session S (application_name "A"), N distinct application names, ...`.
//! When the session's `application_name` (from `host.current-session`) is `panic-now`, it
//! panics with std's default hook, which reads `RUST_BACKTRACE` (`wasi:cli/environment`)
//! before printing `std-user: deliberate panic for application_name panic-now` to stderr.
//! The host must serve all of these, so the plugin answers and its panic message reaches the
//! proxy's log and `SHOW PLUGINS`.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyAction, ReadyDecision, Reuse};
use switchyard::policy::host;
use switchyard::policy::types::{SessionInfo, TxStatus};

/// Calls seen per application name, over the instance's life.
static SEEN: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+std-user").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(session: SessionInfo, _statements: u32) -> ReadyDecision {
        let started = Instant::now();
        let application_name = host::current_session()
            .map(|s| s.application_name)
            .unwrap_or_default();
        if application_name == "panic-now" {
            panic!("std-user: deliberate panic for application_name {application_name}");
        }
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashMap::new);
        *seen.entry(application_name.clone()).or_default() += 1;
        eprintln!(
            "std-user: on-ready session {} (application_name {application_name:?}), {} distinct application names, {:?} so far",
            session.id,
            seen.len(),
            started.elapsed()
        );
        let action = match session.tx_status {
            TxStatus::Idle if !session.holds_server_state => ReadyAction::Release,
            _ => ReadyAction::Keep,
        };
        ReadyDecision {
            action,
            reuse: Reuse::Never,
        }
    }
}

export!(Plugin);
