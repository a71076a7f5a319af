//! Switchyard's pool-mode plugin: decides, at each ReadyForQuery, whether a session's server
//! connection goes back to the pool (world `switchyard:policy/pool-mode-plugin@0.1.0`).
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `mode`: `transaction` (default), `session` or `statement`;
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>";
//! - `reuse`: `always` (default: decisions declared reusable by every session) or `never`.
//!
//! The decision lives in [`policy`] (plain Rust, unit-tested on the host target); this file is
//! the thin wit-bindgen glue. The hot path (`on-ready`) calls no host function, and its
//! decisions are declared reusable (`reuse: always`), so the host calls it once per
//! combination of inputs rather than once per transaction.

pub mod policy;

// The host target cannot link a cdylib whose export names contain ':', and the glue has
// nothing to test there: it is built for wasm32 only.
#[cfg(target_arch = "wasm32")]
mod component;
