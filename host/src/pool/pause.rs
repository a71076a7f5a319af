//! `PAUSE` and `RESUME` of a database: while paused, transactions that need a server wait
//! at the pool instead of starting, and transactions already running finish. A pause has a
//! deadline (the cluster's `hold_timeout`) after which it lifts by itself, so a caller that
//! never says `RESUME` (a crashed callback script) cannot stall clients for ever.
//!
//! State is one value in a watch channel: `RESUME` clears it, a later `PAUSE` replaces it,
//! and waiters look at the latest value, so a `RESUME` racing a `PAUSE` is never lost.

use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
pub struct Pause {
    pub since: Instant,
    pub until: Instant,
}

pub struct PauseGate {
    state: watch::Sender<Option<Pause>>,
}

impl Default for PauseGate {
    fn default() -> Self {
        PauseGate {
            state: watch::channel(None).0,
        }
    }
}

impl PauseGate {
    /// Pauses (or extends a pause) for at most `budget`.
    pub fn pause(&self, budget: Duration) -> Pause {
        let now = Instant::now();
        let pause = Pause {
            since: self.paused().map_or(now, |p| p.since),
            until: now + budget,
        };
        self.state.send_replace(Some(pause));
        pause
    }

    /// Lifts the pause; returns whether there was one in force.
    pub fn resume(&self) -> bool {
        self.state
            .send_replace(None)
            .is_some_and(|p| Instant::now() < p.until)
    }

    /// The pause in force, if any (an expired one is none).
    pub fn paused(&self) -> Option<Pause> {
        (*self.state.borrow()).filter(|p| Instant::now() < p.until)
    }

    /// Waits while paused: until `RESUME` or the pause's deadline.
    pub async fn wait(&self) {
        let mut rx = self.state.subscribe();
        loop {
            let Some(pause) = *rx.borrow_and_update() else {
                return;
            };
            if Instant::now() >= pause.until {
                return;
            }
            if tokio::time::timeout_at(pause.until.into(), rx.changed())
                .await
                .is_err()
            {
                tracing::warn!("pause expired without RESUME: transactions go on");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resume_releases_waiters() {
        let gate = std::sync::Arc::new(PauseGate::default());
        gate.pause(Duration::from_secs(60));
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(gate.resume());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert!(!gate.resume(), "nothing left to resume");
    }

    #[tokio::test]
    async fn a_pause_expires_by_itself() {
        let gate = PauseGate::default();
        gate.pause(Duration::from_millis(30));
        let started = Instant::now();
        gate.wait().await;
        assert!(started.elapsed() >= Duration::from_millis(25));
        assert!(gate.paused().is_none());
    }

    #[tokio::test]
    async fn not_paused_does_not_wait() {
        let gate = PauseGate::default();
        tokio::time::timeout(Duration::from_millis(50), gate.wait())
            .await
            .expect("no wait");
    }
}
