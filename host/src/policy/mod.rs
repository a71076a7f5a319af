//! Policies: every decision the proxy makes at a named point (pool mode, retry, routing,
//! health, switchover), answered by a plugin or the built-in. The hooks are traits whose
//! default bodies are the built-in answers (`hooks`); the facade ([`Policies`]) is what
//! sessions and the topology ask, and the only path from a decision point to a plugin. The
//! built-in policies themselves are plain functions of their inputs, like the plugins
//! that replace them, and the records that cross the boundary live here too.

mod decide;
pub mod hooks;
pub mod pool_mode;
pub mod retry;
pub mod router;
pub mod session;
pub mod switchover;
pub mod topology;
pub mod trace;

pub use self::decide::{Assignment, Policies, SessionPolicies, SwitchoverDecision};
pub use self::hooks::HookError;
pub use self::session::{SessionDetails, SessionFacts};
