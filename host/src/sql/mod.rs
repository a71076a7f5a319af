//! Just enough SQL reading for a proxy, and no parser on the hot path: a lexer that knows
//! quotes and comments (`lex`), and three readers on its tokens, each for one question the
//! proxy asks of a client's SQL text:
//!
//! - `session`: what outlives a transaction (settings, SQL PREPARE, server-side state), so
//!   transaction pooling keeps session state right;
//! - `effects`: what a retry could duplicate (statements that may commit before they end);
//! - `route`: whether a replica may run the text, by which rule, and what it does to the
//!   session's transaction and its node.
//!
//! This module uses nothing else of the crate (it is the bottom layer of
//! `host/tidy-rules.txt`); what it reads is bytes in, small values out.

pub mod effects;
pub mod lex;
pub mod route;
pub mod session;

pub use effects::commits_before_end;
pub use session::{commands, quote_literal, quote_setting_name, server_state, Command};
