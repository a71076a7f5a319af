//! Built-in policies: what the proxy decides when no plugin serves a hook, and what it falls
//! back to, decision by decision, when a plugin fails. They are plain functions of their
//! inputs, like the plugins that replace them.

pub mod pool_mode;
pub mod retry;
pub mod switchover;
pub mod topology;
