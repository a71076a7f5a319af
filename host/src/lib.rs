//! Switchyard: a PostgreSQL wire proxy and connection pooler.
//!
//! The library holds everything; `main.rs` is only the command line. See `ARCHITECTURE.md`
//! for how the modules fit and the invariants they keep.

// Unsafe code only in `plugins/` (wasmtime's artifact loading, the thread CPU clock);
// `tests/tidy.rs` checks the same rule and the module rules from the source.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod auth_query;
pub mod cancel;
pub mod clock;
pub mod config;
pub mod incident;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod notify;
#[allow(unsafe_code)]
pub mod plugins;
pub mod policy;
pub mod pool;
pub mod reload;
pub mod replay;
pub mod roster;
pub mod server;
pub mod session;
pub mod sql;
pub mod state;
pub mod stats;
pub mod stop;
pub mod takeover;
pub mod topology;
pub mod upgrade;
pub mod watch_flag;
pub mod workers;
