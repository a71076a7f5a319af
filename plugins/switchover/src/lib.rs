//! Switchyard's switchover plugin: what a cluster's topology events do to its traffic (world
//! `switchyard:policy/switchover-plugin@0.1.0`): hold new transactions while the primary is
//! going or gone, let running ones finish for a drain budget, move to the confirmed primary
//! and resume, fence and drain a demoted node.
//!
//! Settings (`[plugins.NAME.settings]`):
//! - `hold_ms`: how long new transactions wait for a new primary (default 30000);
//! - `drain_ms`: how long transactions running on a primary that is about to stop may take
//!   (default 5000);
//! - `version_tag`: free text; `version()` returns "<crate version>+<tag>".
//!
//! The decision and the settings live in [`policy`] (plain Rust, unit-tested on the host
//! target); `component.rs` maps the WIT records onto it, and the kit
//! (`switchyard-plugin-kit`) does the rest of the component.

mod component;
pub mod policy;
