//! When a session's server goes back to the pool, by the configured pool mode.

use serde::{Deserialize, Serialize};
use switchyard_protocol::TransactionStatus;

use crate::config::PoolMode;

/// What happens at a ReadyForQuery boundary (the host-side twin of the WIT `ready-action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyAction {
    Release,
    Keep,
    /// Roll back the transaction block the client opened and tell it why (SQLSTATE 25000).
    RefuseTransaction(String),
}

/// Facts about a session at a ReadyForQuery boundary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReadyFacts {
    #[serde(with = "super::trace::tx_status")]
    pub status: TransactionStatus,
    /// Statements run in the current transaction block (1 for autocommit statements).
    pub statements: u32,
    /// The session created state that lives on its server (LISTEN, temporary tables, ...).
    pub holds_server_state: bool,
}

/// The message statement pooling gives for a transaction block (as PgBouncer's).
pub const STATEMENT_MODE_REFUSAL: &str = "transaction blocks are not allowed in statement pooling mode";

pub fn decide(mode: PoolMode, facts: ReadyFacts) -> ReadyAction {
    let idle = facts.status == TransactionStatus::Idle;
    match mode {
        PoolMode::Session => ReadyAction::Keep,
        PoolMode::Transaction if idle && !facts.holds_server_state => ReadyAction::Release,
        PoolMode::Transaction => ReadyAction::Keep,
        PoolMode::Statement if idle && !facts.holds_server_state => ReadyAction::Release,
        PoolMode::Statement if idle => ReadyAction::Keep,
        PoolMode::Statement => ReadyAction::RefuseTransaction(STATEMENT_MODE_REFUSAL.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: TransactionStatus, holds: bool) -> ReadyFacts {
        ReadyFacts {
            status,
            statements: 1,
            holds_server_state: holds,
        }
    }

    #[test]
    fn modes() {
        use TransactionStatus::*;
        assert_eq!(
            decide(PoolMode::Transaction, facts(Idle, false)),
            ReadyAction::Release
        );
        assert_eq!(
            decide(PoolMode::Transaction, facts(InTransaction, false)),
            ReadyAction::Keep
        );
        assert_eq!(
            decide(PoolMode::Transaction, facts(Idle, true)),
            ReadyAction::Keep
        );
        assert_eq!(decide(PoolMode::Session, facts(Idle, false)), ReadyAction::Keep);
        assert_eq!(
            decide(PoolMode::Statement, facts(Idle, false)),
            ReadyAction::Release
        );
        assert_eq!(decide(PoolMode::Statement, facts(Idle, true)), ReadyAction::Keep);
        assert!(matches!(
            decide(PoolMode::Statement, facts(Failed, false)),
            ReadyAction::RefuseTransaction(_)
        ));
    }
}
