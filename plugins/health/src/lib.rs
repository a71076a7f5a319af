//! Switchyard's health plugin: turns each probe of a node into a verdict (role, usable for
//! reads and writes, lag) for the proxy's topology (world
//! `switchyard:policy/health-plugin@0.1.0`).
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `max_lag_bytes`: a replica further behind the primary is not usable for reads
//!   (default: no limit);
//! - `failures_before_down`: failed probes in a row before a node that answered is judged
//!   down (default 1: at the first failure, as the built-in policy);
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>".
//!
//! The decision and the settings live in [`policy`] (plain Rust, unit-tested on the host
//! target); `component.rs` maps the WIT records onto it, and the kit
//! (`switchyard-plugin-kit`) does the rest of the component.

mod component;
pub mod policy;
