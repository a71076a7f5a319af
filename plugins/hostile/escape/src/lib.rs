//! Hostile test plugin: `init` tries to reach outside the sandbox (a file, a TCP connection,
//! the environment) and logs what it got, one `host::log` line each, at `warn`:
//!
//! - `escape: fs /etc/passwd: denied: <error>` or `escape: fs /etc/passwd: READ <n> bytes`
//! - `escape: tcp 127.0.0.1:5432: denied: <error>` or `escape: tcp 127.0.0.1:5432: CONNECTED`
//! - `escape: env: <n> variables` followed by ` [NAME, ...]` when there are any
//!
//! A contained plugin logs "denied" twice and "env: 0 variables". `init` returns Ok either
//! way; `on-ready` always releases.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

use std::fmt::Display;

wit_bindgen::generate!({
    world: "pool-mode-plugin",
    path: "../../../wit",
});

use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyAction};
use switchyard::policy::host::{self, LogLevel};
use switchyard::policy::types::SessionInfo;

fn report<T, E: Display>(what: &str, result: Result<T, E>, ok: impl FnOnce(T) -> String) {
    let outcome = match result {
        Ok(value) => ok(value),
        Err(e) => format!("denied: {e}"),
    };
    host::log(LogLevel::Warn, &format!("escape: {what}: {outcome}"));
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        report("fs /etc/passwd", std::fs::read("/etc/passwd"), |bytes| {
            format!("READ {} bytes", bytes.len())
        });
        report(
            "tcp 127.0.0.1:5432",
            std::net::TcpStream::connect("127.0.0.1:5432"),
            |_| "CONNECTED".to_string(),
        );
        let names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        let list = if names.is_empty() {
            String::new()
        } else {
            format!(" [{}]", names.join(", "))
        };
        host::log(
            LogLevel::Warn,
            &format!("escape: env: {} variables{list}", names.len()),
        );
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+escape").to_string()
    }
}

impl PoolMode for Plugin {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyAction {
        ReadyAction::Release
    }
}

export!(Plugin);
