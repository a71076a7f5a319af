//! The client-side timeouts of `[pool]`: `client_idle_timeout`, `idle_transaction_timeout`,
//! `query_timeout` and `transaction_timeout`. Each wait of the session is in one phase (the
//! client owes the next message with no transaction open, or inside one; or the server owes
//! replies), and the timer is set for the earliest limit of that phase. A session of a pool
//! with none of them set has no timer and reads no clock for them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use switchyard_protocol::backend::ErrorFields;
use switchyard_protocol::sqlstate;
use tokio::time::{Instant, Sleep};

use crate::pool::ClientTimeouts;

/// What the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The client's next message, no transaction open.
    ClientIdle,
    /// The client's next message, inside a transaction on the server it holds.
    IdleInTransaction,
    /// Replies the server owes.
    Query,
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    ClientIdle,
    IdleInTransaction,
    Query,
    Transaction,
}

/// A session's timer and the start of the stretches its limits count from.
pub(super) struct Timeouts {
    limits: ClientTimeouts,
    sleep: Pin<Box<Sleep>>,
    /// What the timer is set for, if anything.
    armed: Option<Expiry>,
    /// Since when the session has held a server for its current stretch of work.
    working_since: Option<Instant>,
    /// Since when the server has owed replies.
    query_since: Option<Instant>,
}

impl Timeouts {
    /// The timer of a session of a pool with `limits`; `None` when none is set.
    pub fn new(limits: ClientTimeouts) -> Option<Box<Timeouts>> {
        limits.any().then(|| {
            Box::new(Timeouts {
                limits,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                armed: None,
                working_since: None,
                query_since: None,
            })
        })
    }

    /// Sets the timer for a wait in `phase`: the earliest of the limits that apply to it.
    pub fn arm(&mut self, phase: Phase) {
        let now = Instant::now();
        if phase == Phase::ClientIdle {
            self.working_since = None;
        }
        if phase != Phase::Query {
            self.query_since = None;
        }
        let mut earliest: Option<(Instant, Expiry)> = None;
        let mut limit = |since: Instant, limit: Duration, expiry: Expiry| {
            if !limit.is_zero() && earliest.is_none_or(|(at, _)| since + limit < at) {
                earliest = Some((since + limit, expiry));
            }
        };
        match phase {
            Phase::ClientIdle => limit(now, self.limits.client_idle, Expiry::ClientIdle),
            Phase::IdleInTransaction => limit(now, self.limits.idle_transaction, Expiry::IdleInTransaction),
            Phase::Query => {
                let since = *self.query_since.get_or_insert(now);
                limit(since, self.limits.query, Expiry::Query);
            }
        }
        if phase != Phase::ClientIdle {
            let since = *self.working_since.get_or_insert(now);
            limit(since, self.limits.transaction, Expiry::Transaction);
        }
        self.armed = earliest.map(|(at, expiry)| {
            self.sleep.as_mut().reset(at);
            expiry
        });
    }
}

/// Resolves when the limit `timeouts` is set for runs out; never for a session without
/// timeouts or a wait none applies to.
pub(super) async fn expired(mut timeouts: Option<&mut Timeouts>) -> Expiry {
    std::future::poll_fn(|cx| poll_expired(timeouts.as_deref_mut(), cx)).await
}

/// [`expired`] as a poll: ready when the limit `timeouts` is set for ran out, pending (and
/// no timer touched) for a session without timeouts or a wait none applies to.
#[inline]
pub(super) fn poll_expired(timeouts: Option<&mut Timeouts>, cx: &mut Context<'_>) -> Poll<Expiry> {
    match timeouts {
        Some(Timeouts {
            armed: Some(expiry),
            sleep,
            ..
        }) => sleep.as_mut().poll(cx).map(|()| *expiry),
        _ => Poll::Pending,
    }
}

/// The FATAL error the client gets when the limit `expiry` of `timeouts` (the session's
/// timer, with the limits the session started with) runs out.
pub(super) fn error(timeouts: Option<&Timeouts>, expiry: Expiry) -> ErrorFields {
    let l = timeouts.map(|t| t.limits).unwrap_or_default();
    let (code, message) = match expiry {
        Expiry::ClientIdle => (
            sqlstate::IDLE_SESSION_TIMEOUT,
            format!(
                "terminating connection due to client_idle_timeout ({:?} without a message)",
                l.client_idle
            ),
        ),
        Expiry::IdleInTransaction => (
            sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            format!(
                "terminating connection due to idle_transaction_timeout ({:?} idle in a transaction); the transaction is rolled back",
                l.idle_transaction
            ),
        ),
        Expiry::Query => (
            sqlstate::QUERY_CANCELED,
            format!(
                "terminating connection due to query_timeout: the statement ran longer than {:?} and was cancelled",
                l.query
            ),
        ),
        Expiry::Transaction => (
            sqlstate::TRANSACTION_TIMEOUT,
            format!(
                "terminating connection due to transaction_timeout ({:?} in one transaction); it is rolled back",
                l.transaction
            ),
        ),
    };
    ErrorFields::fatal(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(client_idle: u64, idle_transaction: u64, query: u64, transaction: u64) -> ClientTimeouts {
        ClientTimeouts {
            client_idle: Duration::from_millis(client_idle),
            idle_transaction: Duration::from_millis(idle_transaction),
            query: Duration::from_millis(query),
            transaction: Duration::from_millis(transaction),
        }
    }

    #[test]
    fn no_limits_no_timer() {
        assert!(Timeouts::new(ClientTimeouts::default()).is_none());
    }

    /// Each phase arms its own limit; the query's and the transaction's count from the
    /// start of their stretch, and the earliest wins; a phase without a limit arms nothing.
    #[tokio::test(start_paused = true)]
    async fn each_phase_arms_the_earliest_limit_that_applies() {
        let mut t = Timeouts::new(limits(0, 300, 500, 1_000)).expect("some set");
        t.arm(Phase::ClientIdle);
        assert_eq!(t.armed, None, "client_idle_timeout is off");
        t.arm(Phase::Query);
        assert_eq!(t.armed, Some(Expiry::Query));
        tokio::time::advance(Duration::from_millis(400)).await;
        t.arm(Phase::Query);
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(150), expired(Some(&mut t))).await,
            Ok(Expiry::Query),
            "fires 500 ms after the query began, not 500 ms after the last wait"
        );
        t.arm(Phase::IdleInTransaction);
        assert_eq!(
            t.armed,
            Some(Expiry::IdleInTransaction),
            "at 500 ms: idle until 800, the transaction until 1000"
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        t.arm(Phase::IdleInTransaction);
        assert_eq!(
            t.armed,
            Some(Expiry::Transaction),
            "at 750 ms: idle until 1050, the transaction until 1000"
        );
        t.arm(Phase::ClientIdle);
        assert_eq!(t.armed, None);
        t.arm(Phase::IdleInTransaction);
        assert_eq!(t.armed, Some(Expiry::IdleInTransaction), "a new stretch of work");
    }
}
