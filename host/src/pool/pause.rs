//! `PAUSE` and `RESUME` of a database: while paused, transactions that need a server wait
//! at the pool instead of starting, and transactions already running finish. A pause has a
//! deadline (the cluster's `hold_timeout`) after which it lifts by itself, so a caller that
//! never says `RESUME` (a crashed callback script) cannot stall clients for ever.
//!
//! A pause also lifts when the cluster's primary changed after `PAUSE` and a primary is
//! confirmed again: the old one stopped and another was promoted (a switchover), or it
//! stopped and came back (a restart). Held transactions then go on without waiting for a
//! `RESUME` that may come late (Patroni's `on_role_change` runs after the promotion,
//! asynchronously) or never (a restart has no role change).
//!
//! State is one value in a watch channel: `RESUME` clears it, a later `PAUSE` replaces it,
//! and waiters look at the latest value, so a `RESUME` racing a `PAUSE` is never lost.

use std::time::{Duration, Instant};

use crate::topology::Cluster;
use crate::watch_flag::FlaggedWatch;

#[derive(Debug, Clone, Copy)]
pub struct Pause {
    pub since: Instant,
    pub until: Instant,
    /// The cluster view's generation (it changes with the primary) when the pause began.
    pub generation: u64,
}

#[derive(Default)]
pub struct PauseGate {
    /// The pause, maybe expired; every checkout asks (see [`FlaggedWatch`]).
    state: FlaggedWatch<Pause>,
}

impl PauseGate {
    /// Pauses (or extends a pause) for at most `budget`; `generation` is the cluster view's
    /// now.
    pub fn pause(&self, budget: Duration, generation: u64) -> Pause {
        let now = Instant::now();
        let earlier = self.paused();
        let pause = Pause {
            since: earlier.map_or(now, |p| p.since),
            until: now + budget,
            generation: earlier.map_or(generation, |p| p.generation),
        };
        self.state.replace(Some(pause));
        pause
    }

    /// Lifts the pause; returns whether there was one in force.
    pub fn resume(&self) -> bool {
        self.state.replace(None).is_some_and(|p| Instant::now() < p.until)
    }

    /// The pause in force, if any (an expired one is none).
    pub fn paused(&self) -> Option<Pause> {
        self.state.get().filter(|p| Instant::now() < p.until)
    }

    /// Waits while paused: until `RESUME`, the pause's deadline, or `cluster` confirming a
    /// primary after its primary changed since the pause.
    pub async fn wait(&self, cluster: &Cluster) {
        let mut rx = self.state.subscribe();
        loop {
            let Some(pause) = *rx.borrow_and_update() else {
                return;
            };
            if Instant::now() >= pause.until {
                return;
            }
            let moved = cluster.wait_for_primary_after(pause.generation);
            tokio::select! {
                changed = tokio::time::timeout_at(pause.until.into(), rx.changed()) => {
                    if changed.is_err() {
                        tracing::warn!(cluster = %cluster.name, "pause expired without RESUME: transactions go on");
                        return;
                    }
                }
                _ = moved => {
                    if self.resume() {
                        tracing::info!(cluster = %cluster.name, "primary confirmed after the change: pause lifted");
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> std::sync::Arc<Cluster> {
        let config: crate::config::Config = crate::config::Config::parse(
            "[clusters.main]\nnodes = [{ host = \"127.0.0.1\", port = 1, role = \"primary\" }]\n",
            "test",
        )
        .expect("config");
        std::sync::Arc::new(Cluster::new("main", &config.clusters["main"], None))
    }

    #[tokio::test]
    async fn resume_releases_waiters() {
        let gate = std::sync::Arc::new(PauseGate::default());
        let cluster = cluster();
        gate.pause(Duration::from_secs(60), 1);
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait(&cluster).await }
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
        gate.pause(Duration::from_millis(30), 1);
        let started = Instant::now();
        gate.wait(&cluster()).await;
        assert!(started.elapsed() >= Duration::from_millis(25));
        assert!(gate.paused().is_none());
    }

    #[tokio::test]
    async fn not_paused_does_not_wait() {
        let gate = PauseGate::default();
        tokio::time::timeout(Duration::from_millis(50), gate.wait(&cluster()))
            .await
            .expect("no wait");
    }
}
