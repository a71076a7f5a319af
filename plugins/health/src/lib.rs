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
//! The decision lives in [`policy`] (plain Rust, unit-tested on the host target); the
//! wit-bindgen glue is compiled for wasm32 only.

pub mod policy;

// The host target cannot link a cdylib whose export names contain ':'.
#[cfg(target_arch = "wasm32")]
mod component;
