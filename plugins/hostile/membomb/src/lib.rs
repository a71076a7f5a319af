//! Hostile test plugin: `on-ready` allocates 1 MiB blocks, touching every page, and keeps
//! them until an allocation fails; the failed allocation aborts (a trap). The host must cap
//! the instance's memory and survive the trap.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

use std::sync::Mutex;

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyDecision};
use switchyard::policy::types::SessionInfo;

/// Never freed: the memory stays claimed across calls.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+membomb").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Non-zero fill so every page is written, not just reserved.
            hoard.push(std::hint::black_box(vec![0xa5u8; 1 << 20]));
        }
    }
}

export!(Plugin);
