//! Hostile test plugin: `on-ready` allocates 1 MiB blocks, touching every page, and keeps
//! them until an allocation fails; the failed allocation aborts (a trap). The host must cap
//! the instance's memory and survive the trap.

use std::sync::Mutex;

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(Membomb, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyDecision};
use bindings::switchyard::policy::types::SessionInfo;

struct Membomb {
    /// Never freed: the memory stays claimed across calls.
    hoard: Mutex<Vec<Vec<u8>>>,
}

impl Plugin for Membomb {
    const NAME: &'static str = "hostile-membomb";
    const SETTINGS: &'static [&'static str] = &[];
    fn new(_: &Settings<'_>) -> Result<Membomb, String> {
        Ok(Membomb {
            hoard: Mutex::new(Vec::new()),
        })
    }
}

impl Guest for Membomb {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        let mut hoard = Membomb::get().hoard.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Non-zero fill so every page is written, not just reserved.
            hoard.push(std::hint::black_box(vec![0xa5u8; 1 << 20]));
        }
    }
}
