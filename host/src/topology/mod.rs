//! What the proxy knows about each cluster's nodes: which one is the primary, which are
//! replicas, their timelines and WAL positions. Probers (`probe.rs`, one task per node)
//! feed samples in; pools ask for the primary when they need a server, and wait for one
//! (up to the cluster's `hold_timeout`) while there is none, which is what turns a
//! switchover into a pause instead of errors.
//!
//! Without a `probe_user` a cluster is not probed and its configured roles are trusted.

mod events;
pub mod patroni;
mod probe;
pub mod reads;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::auth::UserAuth;
use crate::config::{ClusterConfig, NodeRole, ServerAuthMethod};
use crate::incident::Incidents;
use crate::net::ServerTls;
use crate::policy::switchover::{Action, Described, HoldPlan, NodeInfo, TopologyEvent};
use crate::policy::topology::{ProbeInput, ProbeSample, Role, Verdict};
use crate::policy::{Policies, SwitchoverDecision};
use crate::server::NodeAddr;
use crate::watch_flag::FlaggedWatch;

/// One node as last probed.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub sample: ProbeSample,
    pub verdict: Verdict,
    /// Gets no writes: it claims to be primary on an older timeline than the primary, or
    /// the switchover policy fenced it.
    pub fenced: bool,
    /// Claims to be primary on an older timeline than the confirmed primary.
    pub older_timeline: bool,
    /// Fenced by the switchover policy, until it moves traffic to the node again.
    pub fenced_by_policy: bool,
    /// When the switchover policy drained it: servers on it opened before then are closed
    /// when they come back to the pool (or are found idle there).
    pub drained_at: Option<Instant>,
    pub lag_bytes: u64,
    /// How far behind the primary a replica is in time, at most (see
    /// [`reads::WalHistory::lag`]); `None` when unknown.
    pub lag_time: Option<Duration>,
    pub last_probe: Option<SystemTime>,
    pub probe_time: Option<Duration>,
    pub last_error: Option<String>,
}

/// A consistent picture of a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Changes whenever the primary changes.
    pub generation: u64,
    /// The node new transactions go to: the confirmed primary once the switchover policy
    /// moved traffic there; none while there is no confirmed primary (or the policy has not
    /// moved yet).
    pub primary: Option<usize>,
    /// The node the probes confirm as primary (usable for writes, newest timeline).
    pub candidate: Option<usize>,
    /// The newest timeline any node answered with: a replica behind it gets no reads.
    pub newest_timeline: u32,
    pub nodes: Vec<NodeState>,
}

impl ClusterView {
    /// The nodes as the policies see them (switchover and router hooks).
    pub fn node_infos(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                role: n.verdict.role,
                reachable: n.sample.reachable,
                fenced: n.fenced,
                timeline: n.sample.timeline,
                lsn: n.sample.lsn,
                lag_bytes: n.lag_bytes,
                primary: self.primary == Some(i),
            })
            .collect()
    }
}

/// New transactions of a cluster's databases wait (switchover policy `hold`).
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub since: Instant,
    /// Held transactions go on (and meet whatever the topology is then) at this point.
    pub until: Instant,
    /// Running transactions may finish until then.
    pub drain_until: Instant,
}

/// How the proxy probes a cluster.
#[derive(Clone)]
pub struct ProbeSettings {
    pub user: Arc<UserAuth>,
    pub database: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub tls: ServerTls,
    /// `[pool] server_auth_methods`.
    pub auth_methods: Arc<[ServerAuthMethod]>,
}

pub struct Cluster {
    pub name: String,
    pub nodes: Vec<NodeAddr>,
    /// Patroni's REST API per node, where configured.
    pub patroni_apis: Vec<Option<String>>,
    pub hold_timeout: Duration,
    probe: Option<ProbeSettings>,
    view: ArcSwap<ClusterView>,
    /// `view`'s primary, as its index plus one (0: none): what every checkout asks,
    /// answered without loading the view.
    primary_now: AtomicUsize,
    /// Advanced after `view` is published with another primary or a node newly drained:
    /// while it stays the same, a server [`Cluster::keeps_server`] kept is still kept
    /// ([`Cluster::keep_epoch`]).
    keep_epoch: AtomicU64,
    /// Serialises updates of `view` (probers of different nodes race).
    update: Mutex<()>,
    /// The primary (generation) changed; holders wait on it.
    changed: watch::Sender<u64>,
    /// Wakes a node's prober ahead of its interval (a pool could not connect to it).
    pokes: Vec<Notify>,
    /// A new view was published (any probe answered): reads waiting for a replica to
    /// catch up look again.
    published: Notify,
    /// Failover events: what clients went through while the cluster had no primary.
    pub incidents: Arc<Incidents>,
    /// Patroni's view of the nodes (with `patroni_api` configured), for `SHOW NODES`.
    pub patroni: Mutex<patroni::PatroniView>,
    /// The switchover policy's hold, maybe expired; waiters subscribe, and every checkout
    /// asks (see [`FlaggedWatch`]).
    hold: FlaggedWatch<Hold>,
    /// The policy facade, which asks the cluster's health and switchover plugins (or the
    /// built-ins).
    policies: Arc<Policies>,
    /// Probes started so far, all nodes: a probe numbered above a commit's mark started
    /// after the commit.
    probe_seq: AtomicU64,
    /// The confirmed primary's WAL position over time.
    wal: Mutex<reads::WalHistory>,
}

impl Cluster {
    pub fn new(name: &str, config: &ClusterConfig, probe: Option<ProbeSettings>) -> Cluster {
        let nodes: Vec<NodeAddr> = config
            .nodes
            .iter()
            .map(|n| NodeAddr {
                host: n.get_ref().host.as_str().into(),
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
            published: Notify::new(),
            patroni_apis: config
                .nodes
                .iter()
                .map(|n| n.get_ref().patroni_api.clone())
                .collect(),
            nodes,
            hold_timeout: config.hold_timeout,
            probe,
            primary_now: AtomicUsize::new(primary + 1),
            keep_epoch: AtomicU64::new(1),
            view: ArcSwap::from_pointee(ClusterView {
                generation: 1,
                primary: Some(primary),
                candidate: Some(primary),
                newest_timeline: 0,
                nodes: states,
            }),
            update: Mutex::new(()),
            changed: watch::channel(1).0,
            incidents: Arc::new(Incidents::new(name)),
            patroni: Mutex::new(patroni::PatroniView::default()),
            hold: FlaggedWatch::default(),
            policies: Arc::default(),
            probe_seq: AtomicU64::new(0),
            wal: Mutex::default(),
        }
    }

    /// Decides through `policies` (the cluster's `health` and `switchover` plugins as
    /// installed at each decision, so reloads apply) instead of the built-ins alone.
    pub fn with_policies(mut self, policies: Arc<Policies>) -> Cluster {
        self.policies = policies;
        self
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    pub fn probed(&self) -> bool {
        self.probe.is_some()
    }

    /// The primary now, if the cluster has one.
    pub fn primary(&self) -> Option<(usize, &NodeAddr)> {
        let i = self.primary_now.load(Ordering::Acquire).checked_sub(1)?;
        Some((i, &self.nodes[i]))
    }

    /// Changes whenever a server [`Cluster::keeps_server`] kept may no longer be kept (the
    /// primary changed, a node was drained), so a caller may remember a `true` under the
    /// epoch read *before* asking, and skip asking again while the epoch stays the same.
    pub fn keep_epoch(&self) -> u64 {
        self.keep_epoch.load(Ordering::Acquire)
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

    /// Numbers a probe about to start (see [`Cluster::commit_mark`]).
    fn next_probe_seq(&self) -> u64 {
        self.probe_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A mark for a commit acknowledged now: [`Cluster::commit_position`] turns it into the
    /// WAL position the commit reached, once a probe of the primary started after it.
    pub fn commit_mark(&self) -> u64 {
        self.probe_seq.load(Ordering::Acquire)
    }

    /// The WAL position a commit marked `mark` reached, at most (see
    /// [`reads::WalHistory::position_after`]). `None` until a probe proves one; the
    /// primary's prober is then woken, so that a probe starts after the commit now rather
    /// than at its next interval (one probe in flight at a time, however many ask).
    pub fn commit_position(&self, mark: u64) -> Option<u64> {
        let position = self
            .wal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .position_after(mark);
        if position.is_none() {
            if let Some(primary) = self.view.load().candidate {
                self.suspect(primary);
            }
        }
        position
    }

    /// Records a probe of `node` (started as probe `seq`): the cluster's health policy
    /// judges it, the view is recomputed, and the topology events it causes go to the
    /// switchover policy, whose actions are applied before the new view is published.
    fn record(
        &self,
        node: usize,
        seq: u64,
        sample: ProbeSample,
        probe_time: Option<Duration>,
        error: Option<String>,
    ) {
        let primary_lsn = {
            let view = self.view.load();
            view.candidate.map_or(0, |p| view.nodes[p].sample.lsn)
        };
        // The health call runs before the lock: a slow plugin holds up only this prober.
        let verdict = self.policies.judge(
            &self.name,
            &ProbeInput {
                node,
                sample,
                primary_lsn,
                latency: probe_time,
                error: error.as_deref().map(std::borrow::Cow::Borrowed),
            },
        );
        let _one_writer = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.view.load_full();
        let mut view = (*old).clone();
        let state = &mut view.nodes[node];
        state.sample = sample;
        state.verdict = verdict;
        state.last_probe = Some(SystemTime::now());
        state.probe_time = probe_time;
        state.last_error = error;
        let mut events = events::follow_probes(&old, &mut view, node);
        // The history outlives a primary's loss: replicas that replayed the old primary's
        // last position stay readable through a switchover. A new primary continues from
        // there (one starting below it restarts the history, see `WalHistory::record`).
        if view.candidate == Some(node) {
            self.wal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(seq, Instant::now(), sample.lsn);
        }
        if let Some(expired) = self.take_expired_hold() {
            tracing::info!(cluster = %self.name, event = self.incidents.open_id(), held_for = ?expired.until.duration_since(expired.since), "hold expired");
            events.push(TopologyEvent::HoldExpired);
        }
        self.decide_and_publish(&old, view, &events, None);
    }

    /// An operator or HA manager announced a planned stop of `node` (admin `PAUSE NODE`,
    /// the proxy's `SWITCHOVER`): the switchover policy decides (the built-in holds new
    /// transactions and drains the node when it is the primary); a decision that holds opens
    /// a failover event with `reason`. Returns the hold in force afterwards, whose
    /// `drain_until` bounds how long running transactions may take.
    pub fn planned_stop(&self, node: usize, reason: &str) -> Option<Hold> {
        let _one_writer = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.view.load_full();
        let view = (*old).clone();
        self.decide_and_publish(&old, view, &[TopologyEvent::PlannedStop(node)], Some(reason));
        self.hold()
    }

    /// Runs `events` through the switchover policy, applies the actions to `view` and
    /// publishes it. Called with `update` held. `stop_reason`: why a planned stop was
    /// announced (the reason of the failover event its hold opens).
    fn decide_and_publish(
        &self,
        old: &ClusterView,
        mut view: ClusterView,
        events: &[TopologyEvent],
        stop_reason: Option<&str>,
    ) {
        let mut event_id = None;
        for &event in events {
            let (actions, id) = self.decide(event, &view, old.primary, stop_reason);
            event_id = id.or(event_id);
            for action in actions {
                events::apply(self, &mut view, action);
            }
        }
        events::refresh(&mut view);
        self.refresh_lag_times(&mut view);
        if view.primary != old.primary {
            view.generation += 1;
            match (old.primary, view.primary) {
                (_, Some(p)) => tracing::info!(
                    cluster = %self.name,
                    event = event_id,
                    primary = %self.nodes[p],
                    timeline = view.nodes[p].sample.timeline,
                    previous = ?old.primary.map(|o| self.nodes[o].to_string()),
                    "primary confirmed"
                ),
                (Some(o), None) => tracing::warn!(
                    cluster = %self.name,
                    event = event_id,
                    lost = %self.nodes[o],
                    "no primary: holding transactions that need one"
                ),
                (None, None) => {}
            }
        }
        let generation = view.generation;
        let unkeeps = view.primary != old.primary
            || view
                .nodes
                .iter()
                .zip(&old.nodes)
                .any(|(new, old)| new.drained_at != old.drained_at);
        let primary_now = view.primary.map_or(0, |p| p + 1);
        self.view.store(Arc::new(view));
        self.primary_now.store(primary_now, Ordering::Release);
        if unkeeps {
            self.keep_epoch.fetch_add(1, Ordering::Release);
        }
        if generation != old.generation {
            self.changed.send_replace(generation);
        }
        self.published.notify_waiters();
    }

    /// Waits, at most `limit`, for fresh news of the replicas: every replica's prober is
    /// woken (at most one probe per `POKE_GAP` each, however many sessions wait), and the
    /// wait ends at the next view published. A read waiting for a replica to replay its
    /// session's commit so learns of it within a probe's round trip, not a
    /// `probe_interval`.
    pub async fn replica_news(&self, limit: Duration) {
        let published = self.published.notified();
        for (node, state) in self.view.load().nodes.iter().enumerate() {
            if state.verdict.role == Role::Replica {
                self.suspect(node);
            }
        }
        let _ = tokio::time::timeout(limit, published).await;
    }

    /// Each replica's lag in time, from the primary's WAL history.
    fn refresh_lag_times(&self, view: &mut ClusterView) {
        let wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for n in &mut view.nodes {
            n.lag_time = match n.verdict.role {
                Role::Replica if n.sample.reachable => wal.lag(n.sample.lsn, now),
                Role::Primary => Some(Duration::ZERO),
                _ => None,
            };
        }
    }

    /// The switchover policy's actions for `event`, logged as one decision line, and the id
    /// of the failover event the decision belongs to (see `crate::incident`): the open one,
    /// or the one it opens (the primary lost, the primary demoted, which the
    /// previous view's `old_primary` tells, or a planned stop the policy holds traffic for,
    /// with `stop_reason`); none outside an event. Opened here, before the decision is
    /// logged, the event's id is on every line about it.
    fn decide(
        &self,
        event: TopologyEvent,
        view: &ClusterView,
        old_primary: Option<usize>,
        stop_reason: Option<&str>,
    ) -> (Vec<Action>, Option<u64>) {
        let nodes = view.node_infos();
        let SwitchoverDecision { actions, by, ignored } =
            self.policies
                .on_event(&self.name, event, &nodes, view.candidate, self.hold_timeout);
        let name = |n: usize| self.nodes[n].to_string();
        let opens = match event {
            TopologyEvent::PrimaryLost(n) => Some(primary_lost(&name(n))),
            // A promotion found before the old primary's loss was.
            TopologyEvent::Demoted(n) if old_primary == Some(n) => Some(primary_replaced(&name(n))),
            TopologyEvent::PlannedStop(n) if actions.iter().any(|a| matches!(a, Action::Hold(_))) => {
                Some(stop_reason.map_or_else(|| format!("planned stop of {}", name(n)), str::to_string))
            }
            _ => None,
        };
        let event_id = match opens {
            Some(reason) => Some(self.incidents.begin(&reason)),
            None => self.incidents.open_id(),
        };
        for n in ignored {
            tracing::warn!(cluster = %self.name, event = event_id, "switchover {by}: move-to {} ignored, the probes do not confirm that node as primary", name(n));
        }
        let subject = event
            .node()
            .map_or_else(String::new, |n| format!("(node {})", name(n)));
        let decided = Described(&actions, name);
        if actions.is_empty() && matches!(event, TopologyEvent::NodeChanged(_)) {
            tracing::debug!(cluster = %self.name, event = event_id, "switchover {by}: event {}{subject} → {decided}", event.name());
        } else {
            tracing::info!(cluster = %self.name, event = event_id, "switchover {by}: event {}{subject} → {decided}", event.name());
        }
        (actions, event_id)
    }

    /// The hold in force, if any: new transactions of the cluster's databases wait (see
    /// [`Cluster::wait_while_held`]).
    pub fn hold(&self) -> Option<Hold> {
        self.hold.get().filter(|h| Instant::now() < h.until)
    }

    /// Waits while a hold is in force: until the switchover policy resumes (true), or the
    /// hold's budget runs out (false: a transaction that still finds no primary should get
    /// its error now rather than wait again).
    pub async fn wait_while_held(&self) -> bool {
        let mut rx = self.hold.subscribe();
        loop {
            let Some(hold) = *rx.borrow_and_update() else {
                return true;
            };
            if Instant::now() >= hold.until {
                return false;
            }
            if tokio::time::timeout_at(hold.until.into(), rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// How long a transaction that started at `started` may wait for a primary: to the end
    /// of the hold in force, or else `hold_timeout` from its start.
    pub fn hold_deadline(&self, started: Instant) -> Instant {
        self.hold().map_or(started + self.hold_timeout, |h| h.until)
    }

    /// Whether a server on `addr` opened at `created` may go back to (or be taken from)
    /// the pool: the node is the primary and the switchover policy has not drained it since
    /// the server was opened.
    pub fn keeps_server(&self, addr: &NodeAddr, created: Instant) -> bool {
        let view = self.view.load();
        view.primary
            .is_some_and(|p| self.nodes[p] == *addr && view.nodes[p].drained_at.is_none_or(|d| created > d))
    }

    /// Starts holding new transactions, or extends the hold in force.
    fn start_hold(&self, plan: HoldPlan) {
        let now = Instant::now();
        let since = self.hold().map_or(now, |h| h.since);
        self.hold.replace(Some(Hold {
            since,
            until: now + plan.hold,
            drain_until: now + plan.drain,
        }));
    }

    /// Releases held transactions (switchover policy `resume`, or an operator's `RESUME
    /// NODE`); returns whether a hold was in force.
    pub fn release_hold(&self) -> bool {
        self.hold.replace(None).is_some_and(|h| Instant::now() < h.until)
    }

    /// Clears and returns a hold whose budget ran out (once per hold).
    fn take_expired_hold(&self) -> Option<Hold> {
        let expired = self.hold.get().filter(|h| Instant::now() >= h.until)?;
        self.hold.replace(None);
        Some(expired)
    }

    /// Starts one prober task per node (nothing for an unprobed cluster), and the reader
    /// of Patroni's view when a node has a `patroni_api`.
    pub fn spawn_probers(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        tokio::spawn(patroni::watch(self.clone(), shutdown.clone()));
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

#[cfg(test)]
mod tests;

/// The reason of the failover event that the loss of `primary` opens, whichever of a
/// switchover decision ([`Cluster::decide`]) and [`follow_incidents`] opens it first.
fn primary_lost(primary: &str) -> String {
    format!("primary {primary} lost")
}

/// The reason of the failover event that the replacement of `primary` opens (as
/// [`primary_lost`]).
fn primary_replaced(primary: &str) -> String {
    format!("primary {primary} replaced")
}

/// Opens an incident (see `crate::incident`) when `cluster` loses its primary and closes it when one is confirmed:
/// runs for the life of the proxy, one task per probed cluster.
pub async fn follow_incidents(cluster: Arc<Cluster>) {
    let mut seen = cluster.view().generation;
    let mut primary = cluster.primary().map(|(_, a)| a.to_string());
    loop {
        cluster
            .wait_for_change(seen, Instant::now() + Duration::from_secs(3600))
            .await;
        let view = cluster.view();
        if view.generation == seen {
            continue;
        }
        seen = view.generation;
        let now = view.primary.map(|p| cluster.nodes[p].to_string());
        match (&primary, &now) {
            (Some(old), None) => {
                cluster.incidents.begin(&primary_lost(old));
            }
            (old, Some(new)) => {
                if let Some(old) = old {
                    cluster.incidents.begin(&primary_replaced(old));
                }
                cluster.incidents.end(&format!("primary {new} confirmed"));
            }
            (None, None) => {}
        }
        primary = now;
    }
}
