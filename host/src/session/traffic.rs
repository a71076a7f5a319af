//! The session's share of its pool's traffic counters (`crate::stats`): when its request
//! and its transaction started, and the bytes it moved since it last reported them. The
//! clock is read once when a request goes to the server and once at its ReadyForQuery; the
//! pool's atomics are touched at each ReadyForQuery (the query's time) and at each end of
//! a transaction (its time, the bytes).

use switchyard_protocol::backend::TransactionStatus;

use super::Session;
use crate::stats::now_us;

/// Times ([`now_us`]; 0: not running) and byte counts not yet added to the pool's.
#[derive(Default)]
pub(super) struct Clocks {
    /// When the request the server is answering now was sent.
    query_since: u64,
    /// When the transaction started: its first request was sent.
    xact_since: u64,
    /// Bytes read from the client and written to it, not yet reported.
    pub(super) received: u64,
    pub(super) sent: u64,
}

impl Session {
    /// A request that the server ends with ReadyForQuery (a Query, a FunctionCall, a Sync)
    /// was sent: the query's clock starts, and outside a transaction the transaction's,
    /// unless they run already (a request queued behind another starts at the other's end).
    #[inline]
    pub(super) fn request_sent(&mut self) {
        let clocks = &mut self.clocks;
        if clocks.query_since == 0 {
            let now = now_us();
            clocks.query_since = now;
            if clocks.xact_since == 0 {
                clocks.xact_since = now;
            }
        }
    }

    /// A ReadyForQuery for the client, with `status`: one query done; with Idle, one
    /// transaction done, and the bytes moved are reported.
    pub(super) fn request_done(&mut self, status: TransactionStatus) {
        let traffic = &self.pool.stats.traffic;
        let clocks = &mut self.clocks;
        let now = now_us();
        let since = |t: u64| if t == 0 { 0 } else { now.saturating_sub(t) };
        traffic.query.observe(since(clocks.query_since));
        // Requests pipelined behind this one are being answered from now.
        let next = if self.server.replies.is_empty() { 0 } else { now };
        clocks.query_since = next;
        if status == TransactionStatus::Idle {
            traffic.xact.observe(since(clocks.xact_since));
            clocks.xact_since = next;
            self.report_bytes();
        }
    }

    /// Adds the bytes moved since the last report to the pool's counters.
    pub(super) fn report_bytes(&mut self) {
        let traffic = &self.pool.stats.traffic;
        let clocks = &mut self.clocks;
        use std::sync::atomic::Ordering::Relaxed;
        traffic
            .received
            .fetch_add(std::mem::take(&mut clocks.received), Relaxed);
        traffic.sent.fetch_add(std::mem::take(&mut clocks.sent), Relaxed);
    }

    /// An error with `sqlstate` goes to the client.
    pub(super) fn error_sent(&self, sqlstate: &str) {
        self.pool.stats.traffic.error(sqlstate);
    }
}
