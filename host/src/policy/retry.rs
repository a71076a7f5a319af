//! Built-in retry policy: which failed requests the proxy runs again on another server
//! instead of sending the client the error. Only what provably did not take effect is ever
//! retried; the session enforces that whatever a `retry` plugin answers (see [`allowed`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use switchyard_protocol::sqlstate;

/// Where in its life a request failed (the host-side twin of the WIT `error-phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// No server was reached (connect, authentication, 57P03, no primary).
    Connect,
    /// The server failed the request before any of its results reached the client.
    BeforeAnyResult,
    /// Some results had reached the client.
    MidResult,
    /// During or after COMMIT (or an autocommit write) with no CommandComplete seen.
    Commit,
}

/// What the proxy can prove about a failed request's effect (the twin of the WIT `fate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Nothing reached a server.
    NotSent,
    /// The server refused it without effect.
    NotApplied,
    /// It may or may not have committed.
    Unknown,
    /// It committed.
    Committed,
}

/// A request that failed because of its server, as the retry policy sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedRequest {
    /// The SQLSTATE the server sent, or the one the client would get (08006 for a lost
    /// connection).
    pub sqlstate: String,
    pub message: String,
    pub phase: Phase,
    pub fate: Fate,
    /// Index of the node that failed in its cluster's `nodes`.
    pub node: u32,
    /// Attempts so far (1 on the first failure).
    pub attempt: u32,
    /// Since the request's first failure (zero at the first).
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
}

/// What to do with a failed request (the twin of the WIT `retry-decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryDecision {
    /// Send the client the error.
    Surface,
    /// Run the request again after this delay, on a server of the current primary.
    RetryAfter(#[serde(with = "humantime_serde")] Duration),
    /// Wait up to this long for the topology to change (a new primary), then ask again.
    Hold(#[serde(with = "humantime_serde")] Duration),
}

/// Attempts the built-in policy makes before it gives up.
pub const MAX_ATTEMPTS: u32 = 5;

/// The built-in `retry.on-error`: retry what did not take effect, a few times with a
/// growing delay, waiting for a new primary first when the node is going away.
pub fn decide(failed: &FailedRequest, budget: Duration) -> RetryDecision {
    if !allowed(failed) || failed.attempt > MAX_ATTEMPTS || failed.elapsed >= budget {
        return RetryDecision::Surface;
    }
    match failed.sqlstate.as_str() {
        // The node is shutting down or refused a write: a new primary is coming; wait for
        // the topology rather than hammering the old node.
        sqlstate::ADMIN_SHUTDOWN
        | sqlstate::CRASH_SHUTDOWN
        | sqlstate::CANNOT_CONNECT_NOW
        | sqlstate::READ_ONLY_SQL_TRANSACTION
        | sqlstate::CONNECTION_FAILURE
        | sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION => {
            RetryDecision::Hold(budget.saturating_sub(failed.elapsed))
        }
        _ => RetryDecision::RetryAfter(backoff(failed.attempt)),
    }
}

/// Delay before attempt `attempt + 1`: 10 ms, doubling up to 160 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.clamp(1, 5).saturating_sub(1))
}

/// Whether any policy may retry this request: its effect is provably nil and the client
/// has seen none of its results. A plugin's `retry-after` or `hold` for anything else is
/// answered with the error.
pub fn allowed(failed: &FailedRequest) -> bool {
    matches!(failed.fate, Fate::NotSent | Fate::NotApplied)
        && matches!(failed.phase, Phase::Connect | Phase::BeforeAnyResult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(sqlstate: &str, phase: Phase, fate: Fate, attempt: u32) -> FailedRequest {
        FailedRequest {
            sqlstate: sqlstate.to_string(),
            message: String::new(),
            phase,
            fate,
            node: 0,
            attempt,
            elapsed: Duration::from_millis(100),
        }
    }

    #[test]
    fn only_what_did_not_take_effect_is_retried() {
        let budget = Duration::from_secs(30);
        let shutdown = failed(
            sqlstate::ADMIN_SHUTDOWN,
            Phase::BeforeAnyResult,
            Fate::NotApplied,
            1,
        );
        assert!(matches!(decide(&shutdown, budget), RetryDecision::Hold(_)));
        let lost = failed(sqlstate::CONNECTION_FAILURE, Phase::Commit, Fate::Unknown, 1);
        assert_eq!(decide(&lost, budget), RetryDecision::Surface);
        let committed = failed(sqlstate::ADMIN_SHUTDOWN, Phase::Commit, Fate::Committed, 1);
        assert_eq!(decide(&committed, budget), RetryDecision::Surface);
        let streamed = failed(sqlstate::ADMIN_SHUTDOWN, Phase::MidResult, Fate::NotApplied, 1);
        assert_eq!(decide(&streamed, budget), RetryDecision::Surface);
    }

    #[test]
    fn attempts_and_budget_are_bounded() {
        let budget = Duration::from_secs(30);
        let many = failed(
            sqlstate::SERIALIZATION_FAILURE,
            Phase::Connect,
            Fate::NotSent,
            MAX_ATTEMPTS + 1,
        );
        assert_eq!(decide(&many, budget), RetryDecision::Surface);
        let late = failed(sqlstate::ADMIN_SHUTDOWN, Phase::Connect, Fate::NotSent, 1);
        assert_eq!(decide(&late, Duration::from_millis(50)), RetryDecision::Surface);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(9), Duration::from_millis(160));
    }
}
