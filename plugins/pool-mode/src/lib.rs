//! Switchyard's pool-mode plugin: decides, at each ReadyForQuery, whether a session's server
//! connection goes back to the pool, and which sessions may be pipelined (world
//! `switchyard:policy/pipelining-pool-mode-plugin@0.1.0`).
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `mode`: `transaction` (default), `session` or `statement`;
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>";
//! - `reuse`: `always` (default: decisions declared reusable by every session) or `never`;
//! - `pipeline`: `false` (default) or `true`: sessions may be pipelined (pipelined
//!   transaction pooling, the `pipelining` export, asked once per session), narrowed by
//!   `pipeline_users`, `pipeline_databases`, `pipeline_applications` (comma-separated
//!   names; empty: any).
//!
//! The decision and the settings live in [`policy`] (plain Rust, unit-tested on the host
//! target); `component.rs` maps the WIT records onto it, and the kit
//! (`switchyard-plugin-kit`) does the rest of the component. The hot path (`on-ready`) calls no host function, and its
//! decisions are declared reusable (`reuse: always`), so the host calls it once per
//! combination of inputs rather than once per transaction.

mod component;
pub mod policy;
