//! Hostile test plugin: `init` tries to reach outside the sandbox (a file, a TCP connection,
//! the environment) and logs each attempt and its outcome via `host::log`, at `warn`:
//!
//! - `escape: trying fs /etc/passwd`, then `escape: fs /etc/passwd: denied: <error>` or
//!   `escape: fs /etc/passwd: READ <n> bytes`
//! - `escape: trying tcp 127.0.0.1:5432`, then `escape: tcp 127.0.0.1:5432: denied: <error>` or
//!   `escape: tcp 127.0.0.1:5432: CONNECTED`
//! - `escape: trying env`, then `escape: env: <n> variables` followed by ` [NAME, ...]` (names
//!   only, never values) when there are any
//!
//! Under a host that links WASI and denies everything, a contained plugin logs "denied" twice
//! and "env: 0 variables", and `init` returns Ok. Under a host that defines these imports as
//! traps, `init` traps at the first attempt (the last "trying" line says where). `on-ready`
//! always releases.

use std::fmt::Display;

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(Escape, world = "pool-mode-plugin");

use bindings::exports::switchyard::policy::pool_mode::{Guest, ReadyAction, ReadyDecision, Reuse};
use bindings::switchyard::policy::host::{self, LogLevel};
use bindings::switchyard::policy::types::SessionInfo;

fn trying(what: &str) {
    host::log(LogLevel::Warn, &format!("escape: trying {what}"));
}

fn report<T, E: Display>(what: &str, result: Result<T, E>, ok: impl FnOnce(T) -> String) {
    let outcome = match result {
        Ok(value) => ok(value),
        Err(e) => format!("denied: {e}"),
    };
    host::log(LogLevel::Warn, &format!("escape: {what}: {outcome}"));
}

struct Escape;

impl Plugin for Escape {
    const NAME: &'static str = "hostile-escape";
    const SETTINGS: &'static [&'static str] = &[];

    /// The attempts, at `init`.
    fn new(_: &Settings<'_>) -> Result<Escape, String> {
        trying("fs /etc/passwd");
        report("fs /etc/passwd", std::fs::read("/etc/passwd"), |bytes| {
            format!("READ {} bytes", bytes.len())
        });
        trying("tcp 127.0.0.1:5432");
        report(
            "tcp 127.0.0.1:5432",
            std::net::TcpStream::connect("127.0.0.1:5432"),
            |_| "CONNECTED".to_string(),
        );
        trying("env");
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
        Ok(Escape)
    }
}

impl Guest for Escape {
    fn on_ready(_session: SessionInfo, _statements: u32) -> ReadyDecision {
        ReadyDecision {
            action: ReadyAction::Release,
            reuse: Reuse::Never,
        }
    }
}
