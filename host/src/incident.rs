//! The decision log's summary of a failover event: from the moment a cluster loses its
//! primary (or an operator holds its traffic) until a primary is confirmed and traffic
//! flows, how many clients were held and for how long, how many requests ran again, and
//! how many clients got an error. One info line closes each event, and the running totals
//! are the counters behind `SHOW CLUSTERS`.
//!
//! Each event has an id, its number in the cluster's life (1 for the first): the line that
//! opens it, every switchover decision made while it is open (the decision that opens it
//! included) and its summary carry it as the log field `event`, so a failover can be
//! followed in the log by `cluster` and `event`, JSON logs included.
//!
//! Clients report what happened to them (`held`, `retried`, `client_error`); the topology
//! and the pause gate open and close the event. Holds that end just after the event closes
//! (the clients it released) still count towards it: the summary is written a moment later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after an event closes its summary is written, so the clients it released can
/// report their holds.
const SETTLE: Duration = Duration::from_millis(500);

/// Counters since the proxy started, for one cluster.
#[derive(Default)]
pub struct Totals {
    pub events: AtomicU64,
    /// Clients that waited for a primary or a resume.
    pub held: AtomicU64,
    /// Longest single hold, in microseconds.
    pub longest_hold_us: AtomicU64,
    /// Requests run again after their server failed them without effect.
    pub retried: AtomicU64,
    /// Clients that got an error because of their server (lost connection, no primary
    /// within the hold, a request that could not be retried).
    pub client_errors: AtomicU64,
}

/// The open event, if any.
struct Open {
    /// The event's id: its number in the cluster's life.
    id: u64,
    reason: String,
    started: Instant,
    /// Totals when the previous event was summarized: the summary reports the difference,
    /// so what happened just before the topology noticed (a statement cut by the shutdown
    /// that started it) counts too.
    since: Baseline,
}

#[derive(Default, Clone, Copy)]
struct Baseline {
    held: u64,
    retried: u64,
    errors: u64,
}

/// Failover events of one cluster.
pub struct Incidents {
    cluster: String,
    pub totals: Totals,
    open: Mutex<Option<Open>>,
    baseline: Mutex<Baseline>,
    /// Longest hold since the last summary, in microseconds.
    longest_us: AtomicU64,
    /// The last summary line, for `SHOW CLUSTERS`.
    last: Mutex<Option<String>>,
}

impl Incidents {
    pub fn new(cluster: &str) -> Incidents {
        Incidents {
            cluster: cluster.to_string(),
            totals: Totals::default(),
            open: Mutex::new(None),
            baseline: Mutex::new(Baseline::default()),
            longest_us: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Opens an event (no-op while one is open); returns the open event's id.
    pub fn begin(&self, reason: &str) -> u64 {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = open.as_ref() {
            return open.id;
        }
        let id = self.totals.events.fetch_add(1, Ordering::Relaxed) + 1;
        *open = Some(Open {
            id,
            reason: reason.to_string(),
            started: Instant::now(),
            since: *self.baseline.lock().unwrap_or_else(|e| e.into_inner()),
        });
        tracing::info!(cluster = %self.cluster, event = id, reason, "failover event {id}: holding new transactions");
        id
    }

    /// The id of the open event, if one is.
    pub fn open_id(&self) -> Option<u64> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|o| o.id)
    }

    /// Closes the open event; its summary is logged once the clients it released have
    /// reported. Needs a Tokio runtime.
    pub fn end(self: &Arc<Self>, outcome: &str) {
        let Some(open) = self.open.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let duration = open.started.elapsed();
        let this = self.clone();
        let outcome = outcome.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE).await;
            this.summarize(open, duration, &outcome);
        });
    }

    fn summarize(&self, open: Open, duration: Duration, outcome: &str) {
        let t = &self.totals;
        let now = Baseline {
            held: t.held.load(Ordering::Relaxed),
            retried: t.retried.load(Ordering::Relaxed),
            errors: t.client_errors.load(Ordering::Relaxed),
        };
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = now;
        let held = now.held - open.since.held;
        let retried = now.retried - open.since.retried;
        let errors = now.errors - open.since.errors;
        let longest = Duration::from_micros(self.longest_us.swap(0, Ordering::Relaxed));
        let what = format!(
            "{} → {outcome} in {:.2} s: held {held} clients (longest {:.2} s), retried {retried} requests, {errors} client errors",
            open.reason,
            duration.as_secs_f64(),
            longest.as_secs_f64(),
        );
        tracing::info!(cluster = %self.cluster, event = open.id, held, retried, client_errors = errors, "failover event {} over: {what}", open.id);
        let line = format!("event {}: {what}", open.id);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
    }

    pub fn is_open(&self) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The last event's summary line.
    pub fn last_summary(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A client waited `waited` for a primary or a resume.
    pub fn held(&self, waited: Duration) {
        self.totals.held.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.totals.longest_hold_us.fetch_max(us, Ordering::Relaxed);
        self.longest_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.totals.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn client_error(&self) {
        self.totals.client_errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_event_reports_what_happened_around_it() {
        let incidents = Arc::new(Incidents::new("main"));
        assert_eq!(incidents.begin("PAUSE"), 1);
        assert_eq!(incidents.open_id(), Some(1));
        incidents.held(Duration::from_secs(9));
        incidents.end("RESUME");
        tokio::time::sleep(SETTLE * 2).await;
        incidents.retried(); // just before the next event opens: counts towards it
        assert_eq!(incidents.open_id(), None);
        assert_eq!(incidents.begin("primary 127.0.0.1:5432 lost"), 2);
        assert_eq!(incidents.begin("ignored while open"), 2, "the open event's id");
        incidents.held(Duration::from_millis(800));
        incidents.retried();
        incidents.end("primary 127.0.0.1:5433 confirmed");
        incidents.held(Duration::from_millis(1200)); // released by the end, reports late
        tokio::time::sleep(SETTLE * 2).await;
        let line = incidents.last_summary().expect("a summary");
        assert!(
            line.starts_with("event 2: primary 127.0.0.1:5432 lost → primary 127.0.0.1:5433 confirmed"),
            "{line}"
        );
        assert!(
            line.contains("held 2 clients (longest 1.20 s), retried 2 requests, 0 client errors"),
            "{line}"
        );
        assert_eq!(incidents.totals.events.load(Ordering::Relaxed), 2);
        assert_eq!(
            incidents.totals.longest_hold_us.load(Ordering::Relaxed),
            9_000_000
        );
    }
}
