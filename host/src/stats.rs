//! Traffic statistics per pool, behind `SHOW STATS` and the latency histograms of
//! `/metrics`: transactions, queries, bytes, the time spent in transactions, in queries and
//! waiting for a server, and the errors clients were sent, by SQLSTATE.
//!
//! The counters are written on the data path, so they are plain atomics: a histogram is a
//! fixed array of buckets (one atomic add for the bucket, one for the sum; no lock, no
//! allocation) and its count is the sum of its buckets, read at scrape time. Times are
//! whole microseconds read from the monotonic clock ([`now_us`]) once where a query starts
//! and once where it ends. Errors are not the hot path: they are counted under a short
//! mutex, per SQLSTATE.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Buckets of a histogram: bucket `i < BUCKETS - 1` holds the times in
/// `(2^(i-1), 2^i]` µs (bucket 0: up to 1 µs), the last everything over 2^(BUCKETS-2) µs
/// (about 33.6 s).
pub const BUCKETS: usize = 27;

/// Distinct SQLSTATEs counted per pool; errors with any other code once this many are
/// known are counted under [`OTHER_SQLSTATE`] (Postgres has about 260 codes).
pub const MAX_SQLSTATES: usize = 300;

/// Where errors go once [`MAX_SQLSTATES`] codes are known.
pub const OTHER_SQLSTATE: &str = "other";

/// The monotonic clock in microseconds after the process's origin (`crate::clock`), from 1: never 0, which the
/// session uses as "not running". (std's clock, through the C library's `clock_gettime`:
/// a raw vDSO lookup, as rustix's, crashes where the vDSO is not mapped, e.g. under
/// valgrind.)
#[inline]
pub fn now_us() -> u64 {
    let d = crate::clock::since_origin(Instant::now());
    d.as_secs() * 1_000_000 + u64::from(d.subsec_micros()) + 1
}

/// The bucket of a time of `us` microseconds.
#[inline]
fn bucket(us: u64) -> usize {
    // ceil(log2(us)) for us >= 2; 0 for 0 and 1.
    let i = (u64::BITS - us.saturating_sub(1).leading_zeros()) as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of bucket `i` in microseconds; `None` for the last (+Inf).
pub fn upper_bound_us(i: usize) -> Option<u64> {
    (i < BUCKETS - 1).then(|| 1u64 << i)
}

/// A latency histogram with log-scale buckets, in microseconds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one time of `us` microseconds.
    #[inline]
    pub fn observe(&self, us: u64) {
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The numbers now (each bucket read once; not one instant across buckets).
    pub fn read(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's numbers, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Times per bucket (not cumulative).
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            buckets: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s numbers (a database's pools summed).
    pub fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }

    /// The times counted since `earlier`, a reading of the same histogram.
    fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The mean in microseconds (0 with no times).
    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count()).unwrap_or(0)
    }

    /// An upper bound of quantile `q` (0 < q <= 1) in microseconds: the upper bound of the
    /// bucket that holds it, so the true value is at most this and more than half of it.
    /// For the last bucket, whose bound is infinite, its lower bound. 0 with no times.
    pub fn quantile_bound_us(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // The rank of the quantile, 1-based: the smallest time with at least q of all at
        // or below it.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound_us(i).unwrap_or(1 << (BUCKETS - 2));
            }
        }
        1 << (BUCKETS - 2)
    }
}

/// One pool's traffic counters.
pub struct Traffic {
    /// When counting started ([`now_us`]): the averages of `SHOW STATS` are over the time
    /// since.
    pub since_us: u64,
    /// Transactions (an autocommit statement is one), from the first request sent to the
    /// server to the ReadyForQuery that ends the transaction block.
    pub xact: Histogram,
    /// Requests (a Query, a FunctionCall, an extended-protocol batch up to its Sync), from
    /// being sent to the server to their ReadyForQuery.
    pub query: Histogram,
    /// Waits for a server that did not find one at once (a checkout served at once, the
    /// common case, is counted by the pool's `checkouts` and not here: see [`Traffic::waits`]).
    pub wait: Histogram,
    /// Bytes read from clients and written to them (after login).
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Errors sent to clients, by SQLSTATE, in the order first seen.
    errors: Mutex<Vec<(String, u64)>>,
    /// The `stats_period` in progress and the last one completed ([`Traffic::roll`]).
    period: Mutex<Period>,
}

/// A pool's totals at one reading: what `SHOW STATS` shows, and what its averages are
/// differences of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub xact: Snapshot,
    pub query: Snapshot,
    /// Every checkout's wait ([`Traffic::waits`]).
    pub wait: Snapshot,
    pub received: u64,
    pub sent: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.xact.add(&other.xact);
        self.query.add(&other.query);
        self.wait.add(&other.wait);
        self.received += other.received;
        self.sent += other.sent;
    }

    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            xact: self.xact.since(&earlier.xact),
            query: self.query.since(&earlier.query),
            wait: self.wait.since(&earlier.wait),
            received: self.received.saturating_sub(earlier.received),
            sent: self.sent.saturating_sub(earlier.sent),
        }
    }
}

/// What the averages cover: the totals' growth over a stretch of time and its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub grew: Totals,
    pub micros: u64,
}

/// The `stats_period` in progress (from `started_us`, at `base`) and the last completed.
#[derive(Default)]
struct Period {
    started_us: u64,
    base: Totals,
    last: Option<Window>,
}

impl Default for Traffic {
    fn default() -> Traffic {
        let since_us = now_us();
        Traffic {
            since_us,
            xact: Histogram::default(),
            query: Histogram::default(),
            wait: Histogram::default(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            errors: Mutex::default(),
            period: Mutex::new(Period {
                started_us: since_us,
                ..Period::default()
            }),
        }
    }
}

impl Traffic {
    /// The wait histogram with every checkout in it: those that did not wait (the pool's
    /// `checkouts` less the waits counted) in the first bucket.
    pub fn waits(&self, checkouts: u64) -> Snapshot {
        let mut waits = self.wait.read();
        let slow = waits.count();
        waits.buckets[0] += checkouts.saturating_sub(slow);
        waits
    }

    /// The totals now, with the pool's `checkouts` (see [`Traffic::waits`]).
    pub fn totals(&self, checkouts: u64) -> Totals {
        Totals {
            xact: self.xact.read(),
            query: self.query.read(),
            wait: self.waits(checkouts),
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
        }
    }

    /// Closes the period in progress if it is `period_us` long at `now` ([`now_us`]): its
    /// growth becomes the averages' window. The reaper calls this once a second.
    pub fn roll(&self, now: u64, period_us: u64, checkouts: u64) {
        let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
        let micros = now.saturating_sub(period.started_us);
        if micros < period_us {
            return;
        }
        let totals = self.totals(checkouts);
        period.last = Some(Window {
            grew: totals.since(&period.base),
            micros,
        });
        period.base = totals;
        period.started_us = now;
    }

    /// What the averages cover at `now`, given the `totals` just read: the last completed
    /// period, or until one has completed the time since counting started (at least a
    /// second, so that a new pool's first numbers are not inflated).
    pub fn window(&self, now: u64, totals: &Totals) -> Window {
        if let Some(last) = self.period.lock().unwrap_or_else(|e| e.into_inner()).last {
            return last;
        }
        Window {
            grew: *totals,
            micros: now.saturating_sub(self.since_us).max(1_000_000),
        }
    }

    /// Counts an error with `sqlstate` sent to a client.
    pub fn error(&self, sqlstate: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = errors.iter_mut().find(|(code, _)| code == sqlstate) {
            *n += 1;
            return;
        }
        let code = if errors.len() < MAX_SQLSTATES {
            sqlstate
        } else {
            OTHER_SQLSTATE
        };
        match errors.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => errors.push((code.to_string(), 1)),
        }
    }

    /// Errors sent to clients so far, by SQLSTATE.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The columns of `SHOW STATS`: PgBouncer's, then the 99th percentiles.
pub const SHOW_STATS_COLUMNS: [&str; 18] = [
    "database",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "p99_xact_time",
    "p99_query_time",
    "p99_wait_time",
];

/// A database's `SHOW STATS` row from its pools' counters, each with the pool's
/// `checkouts` (every wait for a server, see [`Traffic::waits`]), at `now` ([`now_us`]).
/// Times in microseconds. The totals are since counting started; the averages, as
/// PgBouncer's, cover the last `stats_period` ([`Traffic::window`]): counts and bytes per
/// second, times per transaction, query and wait, and the 99th percentiles.
pub fn show_stats_row<'a>(
    database: &str,
    pools: impl IntoIterator<Item = (&'a Traffic, u64)>,
    now: u64,
) -> Vec<String> {
    let mut totals = Totals::default();
    let mut recent = Totals::default();
    // Per second, summed over the pools (each pool's window has its own length).
    let mut rates = [0f64; 4];
    for (t, checkouts) in pools {
        let pool = t.totals(checkouts);
        totals.add(&pool);
        let w = t.window(now, &pool);
        recent.add(&w.grew);
        let per_second = |n: u64| n as f64 * 1e6 / w.micros.max(1) as f64;
        for (rate, n) in rates.iter_mut().zip([
            w.grew.xact.count(),
            w.grew.query.count(),
            w.grew.received,
            w.grew.sent,
        ]) {
            *rate += per_second(n);
        }
    }
    let numbers = [
        totals.xact.count(),
        totals.query.count(),
        totals.received,
        totals.sent,
        totals.xact.sum_us,
        totals.query.sum_us,
        totals.wait.sum_us,
        rates[0] as u64,
        rates[1] as u64,
        rates[2] as u64,
        rates[3] as u64,
        recent.xact.mean_us(),
        recent.query.mean_us(),
        recent.wait.mean_us(),
        recent.xact.quantile_bound_us(0.99),
        recent.query.quantile_bound_us(0.99),
        recent.wait.quantile_bound_us(0.99),
    ];
    std::iter::once(database.to_string())
        .chain(numbers.iter().map(u64::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 2);
        assert_eq!(bucket(5), 3);
        assert_eq!(bucket(200_000), 18); // (131072, 262144]
        assert_eq!(bucket(1 << 25), 25);
        assert_eq!(bucket((1 << 25) + 1), 26);
        assert_eq!(bucket(u64::MAX), 26);
        assert_eq!(upper_bound_us(18), Some(262_144));
        assert_eq!(upper_bound_us(26), None);
    }

    #[test]
    fn counts_sums_and_bounds_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.read().quantile_bound_us(0.99), 0);
        for _ in 0..98 {
            h.observe(100);
        }
        h.observe(200_000);
        h.observe(300_000);
        let s = h.read();
        assert_eq!(s.count(), 100);
        assert_eq!(s.sum_us, 98 * 100 + 500_000);
        assert_eq!(s.mean_us(), 5_098);
        assert_eq!(s.quantile_bound_us(0.5), 128);
        assert_eq!(s.quantile_bound_us(0.98), 128);
        assert_eq!(s.quantile_bound_us(0.99), 262_144);
        assert_eq!(s.quantile_bound_us(1.0), 524_288);
        let mut twice = s;
        twice.add(&s);
        assert_eq!((twice.count(), twice.sum_us), (200, 2 * s.sum_us));
    }

    #[test]
    fn waits_put_checkouts_served_at_once_in_the_first_bucket() {
        let t = Traffic::default();
        t.wait.observe(5_000);
        let w = t.waits(10);
        assert_eq!((w.count(), w.buckets[0], w.sum_us), (10, 9, 5_000));
    }

    #[test]
    fn counts_errors_by_sqlstate_up_to_a_bound() {
        let t = Traffic::default();
        t.error("42P01");
        t.error("22012");
        t.error("42P01");
        assert_eq!(
            t.errors(),
            vec![("42P01".to_string(), 2), ("22012".to_string(), 1)]
        );
        for i in 0..MAX_SQLSTATES {
            t.error(&format!("X{i:04}"));
        }
        let errors = t.errors();
        assert_eq!(errors.len(), MAX_SQLSTATES + 1);
        assert_eq!(errors.last(), Some(&(OTHER_SQLSTATE.to_string(), 2)));
        t.error("42P01");
        assert_eq!(t.errors()[0], ("42P01".to_string(), 3));
    }

    /// Until a period completes the averages cover the time since counting started; once
    /// one has, they cover only it, and its growth: the totals stay since the start.
    #[test]
    fn averages_cover_the_last_whole_stats_period() {
        let t = Traffic::default();
        let start = t.since_us;
        for _ in 0..4 {
            t.xact.observe(1_000);
        }
        let row = |now| show_stats_row("app", [(&t, 0)], now);
        // 2 s in, no period over: 4 transactions in 2 s, 1000 µs each.
        let r = row(start + 2_000_000);
        assert_eq!((r[1].as_str(), r[8].as_str(), r[12].as_str()), ("4", "2", "1000"));
        t.roll(start + 2_000_000, 10_000_000, 0);
        assert_eq!(
            row(start + 2_000_000),
            r,
            "a period shorter than stats_period does not close"
        );
        t.roll(start + 10_000_000, 10_000_000, 0);
        // The next period: 10 transactions of 100 µs, over 10 s.
        for _ in 0..10 {
            t.xact.observe(100);
        }
        let r = row(start + 15_000_000);
        assert_eq!(
            (r[1].as_str(), r[8].as_str(), r[12].as_str()),
            ("14", "0", "1000"),
            "the first period's: 4 in 10 s"
        );
        t.roll(start + 20_000_000, 10_000_000, 0);
        let r = row(start + 21_000_000);
        assert_eq!(
            (r[1].as_str(), r[8].as_str(), r[12].as_str(), r[15].as_str()),
            ("14", "1", "100", "128")
        );
    }

    #[test]
    fn a_show_stats_row_sums_the_pools_of_a_database() {
        let (a, b) = (Traffic::default(), Traffic::default());
        for t in [&a, &b] {
            t.xact.observe(300);
            t.query.observe(100);
            t.query.observe(200);
            t.received.fetch_add(1_000, Ordering::Relaxed);
            t.sent.fetch_add(4_000, Ordering::Relaxed);
        }
        a.wait.observe(1_000);
        let row = show_stats_row("app", [(&a, 1), (&b, 1)], a.since_us.min(b.since_us) + 2_000_000);
        assert_eq!(row.len(), SHOW_STATS_COLUMNS.len());
        let expected = [
            "app", "2", "4", "2000", "8000", "600", "600", "1000", "1", "2", "1000", "4000", "300", "150",
            "500", "512", "256", "1024",
        ];
        assert_eq!(row, expected);
    }
}
