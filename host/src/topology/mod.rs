//! What the proxy knows about each cluster's nodes: which one is the primary, which are
//! replicas, their timelines and WAL positions. Probers (`probe.rs`, one task per node)
//! feed samples in; pools ask for the primary when they need a server, and wait for one
//! (up to the cluster's `hold_timeout`) while there is none, which is what turns a
//! switchover into a pause instead of errors.
//!
//! Without a `probe_user` a cluster is not probed and its configured roles are trusted.

pub mod patroni;
mod probe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::auth::UserAuth;
use crate::config::{ClusterConfig, NodeRole};
use crate::incident::Incidents;
use crate::net::ServerTls;
use crate::policy::topology::{choose_primary, evaluate, ProbeSample, Role, Verdict};
use crate::server::NodeAddr;

/// One node as last probed.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub sample: ProbeSample,
    pub verdict: Verdict,
    /// Claims to be primary on an older timeline than the primary: gets no writes.
    pub fenced: bool,
    pub lag_bytes: u64,
    pub last_probe: Option<SystemTime>,
    pub probe_time: Option<Duration>,
    pub last_error: Option<String>,
}

/// A consistent picture of a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Changes whenever the primary changes.
    pub generation: u64,
    pub primary: Option<usize>,
    pub nodes: Vec<NodeState>,
}

/// How the proxy probes a cluster.
#[derive(Clone)]
pub struct ProbeSettings {
    pub user: Arc<UserAuth>,
    pub database: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub tls: ServerTls,
}

pub struct Cluster {
    pub name: String,
    pub nodes: Vec<NodeAddr>,
    /// Patroni's REST API per node, where configured.
    pub patroni_apis: Vec<Option<String>>,
    pub hold_timeout: Duration,
    probe: Option<ProbeSettings>,
    view: ArcSwap<ClusterView>,
    /// Serialises updates of `view` (probers of different nodes race).
    update: Mutex<()>,
    /// The primary (generation) changed; holders wait on it.
    changed: watch::Sender<u64>,
    /// Wakes a node's prober ahead of its interval (a pool could not connect to it).
    pokes: Vec<Notify>,
    /// Failover events: what clients went through while the cluster had no primary.
    pub incidents: Arc<Incidents>,
}

impl Cluster {
    pub fn new(name: &str, config: &ClusterConfig, probe: Option<ProbeSettings>) -> Cluster {
        let nodes: Vec<NodeAddr> = config
            .nodes
            .iter()
            .map(|n| NodeAddr {
                host: n.get_ref().host.clone(),
                port: n.get_ref().port,
            })
            .collect();
        // Until the first probes answer (or forever, unprobed), the configured roles hold:
        // the node marked primary, or the first.
        let primary = config
            .nodes
            .iter()
            .position(|n| n.get_ref().role == NodeRole::Primary)
            .unwrap_or(0);
        let states = config
            .nodes
            .iter()
            .map(|n| {
                let role = match n.get_ref().role {
                    NodeRole::Primary => Role::Primary,
                    NodeRole::Replica => Role::Replica,
                    NodeRole::Unknown => Role::Unknown,
                };
                NodeState {
                    verdict: Verdict {
                        role,
                        usable_for_reads: true,
                        usable_for_writes: role == Role::Primary,
                    },
                    ..Default::default()
                }
            })
            .collect();
        Cluster {
            name: name.to_string(),
            pokes: nodes.iter().map(|_| Notify::new()).collect(),
            patroni_apis: config
                .nodes
                .iter()
                .map(|n| n.get_ref().patroni_api.clone())
                .collect(),
            nodes,
            hold_timeout: config.hold_timeout,
            probe,
            view: ArcSwap::from_pointee(ClusterView {
                generation: 1,
                primary: Some(primary),
                nodes: states,
            }),
            update: Mutex::new(()),
            changed: watch::channel(1).0,
            incidents: Arc::new(Incidents::new(name)),
        }
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    pub fn probed(&self) -> bool {
        self.probe.is_some()
    }

    /// The primary now, if the cluster has one.
    pub fn primary(&self) -> Option<(usize, &NodeAddr)> {
        self.view.load().primary.map(|i| (i, &self.nodes[i]))
    }

    /// The primary, waiting until `deadline` while there is none.
    pub async fn wait_for_primary(&self, deadline: Instant) -> Option<(usize, &NodeAddr)> {
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(p) = self.primary() {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline.into(), changed.changed())
                .await
                .is_err()
            {
                return self.primary();
            }
        }
    }

    /// Resolves once the primary has changed since view generation `since` (to none or
    /// another node) and the cluster has a primary again.
    pub async fn wait_for_primary_after(&self, since: u64) {
        let mut changed = self.changed.subscribe();
        loop {
            let view = self.view.load();
            if view.generation != since && view.primary.is_some() {
                return;
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Waits until the primary changes from generation `seen`, or `deadline`.
    pub async fn wait_for_change(&self, seen: u64, deadline: Instant) {
        let mut changed = self.changed.subscribe();
        let _ = tokio::time::timeout_at(deadline.into(), changed.wait_for(|g| *g != seen)).await;
    }

    /// A pool could not connect to `node`: probe it now rather than at the next interval.
    pub fn suspect(&self, node: usize) {
        if let Some(poke) = self.pokes.get(node) {
            poke.notify_one();
        }
    }

    /// Records a probe of `node` and recomputes the primary.
    fn record(&self, node: usize, sample: ProbeSample, probe_time: Option<Duration>, error: Option<String>) {
        let _one_writer = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.view.load_full();
        let mut view = (*old).clone();
        let state = &mut view.nodes[node];
        state.sample = sample;
        state.verdict = evaluate(&sample);
        state.last_probe = Some(SystemTime::now());
        state.probe_time = probe_time;
        state.last_error = error;
        let inputs: Vec<(Verdict, u32)> = view
            .nodes
            .iter()
            .map(|n| (n.verdict, n.sample.timeline))
            .collect();
        let (primary, fenced) = choose_primary(&inputs, old.primary);
        let primary_lsn = primary.map_or(0, |p| view.nodes[p].sample.lsn);
        for (i, n) in view.nodes.iter_mut().enumerate() {
            n.fenced = fenced.contains(&i);
            n.lag_bytes = match n.verdict.role {
                Role::Replica if primary_lsn > 0 => primary_lsn.saturating_sub(n.sample.lsn),
                _ => 0,
            };
        }
        view.primary = primary;
        if primary != old.primary {
            view.generation += 1;
            match (old.primary, primary) {
                (_, Some(p)) => tracing::info!(
                    cluster = %self.name,
                    primary = %self.nodes[p],
                    timeline = view.nodes[p].sample.timeline,
                    previous = ?old.primary.map(|o| self.nodes[o].to_string()),
                    "primary confirmed"
                ),
                (Some(o), None) => tracing::warn!(
                    cluster = %self.name,
                    lost = %self.nodes[o],
                    "no primary: holding transactions that need one (hold_timeout {:?})",
                    self.hold_timeout
                ),
                (None, None) => {}
            }
            for &f in &fenced {
                tracing::warn!(cluster = %self.name, node = %self.nodes[f], timeline = view.nodes[f].sample.timeline, "node claims primary on an older timeline: fenced");
            }
        }
        let generation = view.generation;
        self.view.store(Arc::new(view));
        if generation != old.generation {
            self.changed.send_replace(generation);
        }
    }

    /// Starts one prober task per node (nothing for an unprobed cluster).
    pub fn spawn_probers(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        if self.probe.is_none() {
            return;
        }
        for node in 0..self.nodes.len() {
            tokio::spawn(probe::run(self.clone(), node, shutdown.clone()));
        }
    }
}

/// Every configured cluster.
#[derive(Default)]
pub struct Topology {
    pub clusters: HashMap<String, Arc<Cluster>>,
}

impl Topology {
    pub fn spawn_probers(&self, shutdown: &watch::Receiver<bool>) {
        for cluster in self.clusters.values() {
            cluster.spawn_probers(shutdown.clone());
        }
    }
}
