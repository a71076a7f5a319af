//! Which nodes may serve reads, and how far each is behind: the topology side of read
//! routing. The primary's WAL position is remembered over time from its probes
//! ([`WalHistory`]), which turns a replica's replay position into a lag in time as well as
//! in bytes, and tells a session which position its last commit reached (read-your-writes)
//! without a query on the session's path: a probe of the primary that *started* after the
//! commit was acknowledged saw a WAL position at or past it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ClusterView, NodeState};
use crate::policy::topology::Role;

/// Samples kept: at the default probe interval (250 ms) over four minutes of changes. A
/// replica further behind than the oldest sample has an unknown lag and gets no reads.
const HISTORY: usize = 1024;

/// One probe of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WalSample {
    /// The cluster's probe sequence number when the probe started; for a run of samples
    /// at one position, the last of them (the latest probe that saw the position).
    seq: u64,
    /// When the probe answered; for a run of samples at one position, the last of them.
    at: Instant,
    /// The primary's WAL insert position.
    lsn: u64,
}

/// The primary's WAL position over time, from its probes (newest last).
#[derive(Debug, Default)]
pub struct WalHistory {
    samples: VecDeque<WalSample>,
}

impl WalHistory {
    /// Records a probe of the primary that started as probe `seq` and saw `lsn` at `at`.
    /// A run at one position keeps one entry, with the run's last `seq` and time (the
    /// latest probe that saw the primary there).
    pub fn record(&mut self, seq: u64, at: Instant, lsn: u64) {
        if let Some(last) = self.samples.back_mut() {
            if lsn < last.lsn {
                // A new primary on a new timeline may start below what the old one reached:
                // positions before it say nothing about it.
                self.samples.clear();
            } else if lsn == last.lsn {
                last.seq = seq;
                last.at = at;
                return;
            }
        }
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back(WalSample { seq, at, lsn });
    }

    /// How far behind, in time, a replica that replayed up to `replayed` is at `now`: an
    /// upper bound, `now` minus the last time the primary was seen at or below that
    /// position (zero when it is at the newest position seen). `None` when the history does
    /// not reach back that far, or there is none.
    pub fn lag(&self, replayed: u64, now: Instant) -> Option<Duration> {
        let newest = self.samples.back()?;
        if replayed >= newest.lsn {
            return Some(Duration::ZERO);
        }
        self.samples
            .iter()
            .rev()
            .find(|s| s.lsn <= replayed)
            .map(|s| now.saturating_duration_since(s.at))
    }

    /// The WAL position a commit acknowledged before probe `seq` started had certainly
    /// reached: the position seen by the first probe of the primary that started after it.
    /// `None` while no such probe has answered yet.
    pub fn position_after(&self, seq: u64) -> Option<u64> {
        // Entries are in order of seq; the first one past `seq` proves the least.
        self.samples.iter().find(|s| s.seq > seq).map(|s| s.lsn)
    }
}

/// What a database allows a replica to be behind by.
#[derive(Debug, Clone, Copy)]
pub struct LagBudget {
    pub bytes: u64,
    pub time: Duration,
}

/// Why a node gets no reads now (`None` from [`skip_reason`] when it may serve them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not a replica the probes confirmed (unknown, or unreachable).
    NotReplica,
    /// Fenced, or on an older timeline than the newest one seen.
    OldTimeline,
    /// Behind by more bytes than the budget.
    LagBytes,
    /// Behind by more time than the budget, or by an unknown time.
    LagTime,
    /// Has not replayed the position a read must see (read-your-writes).
    BehindCommit,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotReplica => "not-replica",
            Skip::OldTimeline => "old-timeline",
            Skip::LagBytes => "lag-bytes",
            Skip::LagTime => "lag-time",
            Skip::BehindCommit => "behind-commit",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [Skip; 5] = [
        Skip::NotReplica,
        Skip::OldTimeline,
        Skip::LagBytes,
        Skip::LagTime,
        Skip::BehindCommit,
    ];
}

/// Whether replica `node` of `view` may serve a read that must see position `min_lsn`
/// (0: none), within `budget`.
pub fn skip_reason(view: &ClusterView, node: &NodeState, budget: &LagBudget, min_lsn: u64) -> Option<Skip> {
    if node.verdict.role != Role::Replica || !node.verdict.usable_for_reads || !node.sample.reachable {
        return Some(Skip::NotReplica);
    }
    if node.fenced || node.sample.timeline < view.newest_timeline {
        return Some(Skip::OldTimeline);
    }
    if node.lag_bytes > budget.bytes {
        return Some(Skip::LagBytes);
    }
    if node.lag_time.is_none_or(|t| t > budget.time) {
        return Some(Skip::LagTime);
    }
    if node.sample.lsn < min_lsn {
        return Some(Skip::BehindCommit);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_time_is_bounded_by_the_last_time_the_primary_was_at_the_replay_position() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = WalHistory::default();
        assert_eq!(h.lag(0, t0), None, "no history: unknown");
        h.record(1, ms(0), 100);
        h.record(2, ms(250), 100);
        h.record(3, ms(500), 200);
        h.record(4, ms(750), 300);
        assert_eq!(h.lag(300, ms(800)), Some(Duration::ZERO), "caught up");
        assert_eq!(
            h.lag(350, ms(800)),
            Some(Duration::ZERO),
            "ahead of the last probe"
        );
        assert_eq!(
            h.lag(250, ms(800)),
            Some(Duration::from_millis(300)),
            "last seen at 200 at 500 ms"
        );
        assert_eq!(
            h.lag(100, ms(800)),
            Some(Duration::from_millis(550)),
            "last seen at 100 at 250 ms"
        );
        assert_eq!(h.lag(50, ms(800)), None, "before the history");
    }

    #[test]
    fn a_commit_is_proven_by_the_first_probe_that_started_after_it() {
        let t0 = Instant::now();
        let mut h = WalHistory::default();
        h.record(5, t0, 100);
        h.record(7, t0, 100);
        h.record(9, t0, 180);
        assert_eq!(h.position_after(4), Some(100));
        assert_eq!(h.position_after(5), Some(100), "probe 7 saw 100 too");
        assert_eq!(h.position_after(7), Some(180));
        assert_eq!(h.position_after(9), None, "no probe started after it yet");
    }

    #[test]
    fn a_position_below_the_last_starts_a_new_history() {
        let t0 = Instant::now();
        let mut h = WalHistory::default();
        h.record(1, t0, 500);
        h.record(2, t0, 100);
        assert_eq!(h.position_after(0), Some(100));
        assert_eq!(h.lag(100, t0), Some(Duration::ZERO));
    }
}
