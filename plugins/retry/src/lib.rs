//! Switchyard's retry plugin: which requests a server failed are run again (world
//! `switchyard:policy/retry-plugin@0.1.0`). Only what provably did not take effect: never a
//! request whose fate is unknown or committed, nor one that already sent results; a node
//! going away (57P01, 57P02, 57P03, 25006, 08006, 08001) means waiting for the topology,
//! anything else a short backoff; bounded attempts and time. The same rules as the proxy's
//! built-in policy, with the bounds as settings.
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `max_attempts`: attempts before the error is surfaced (default 5);
//! - `budget_ms`: time since the request started after which the error is surfaced
//!   (default 30000);
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>".
//!
//! The decision and the settings live in [`policy`] (plain Rust, unit-tested on the host
//! target); `component.rs` maps the WIT records onto it, and the kit
//! (`switchyard-plugin-kit`) does the rest of the component.

mod component;
pub mod policy;
