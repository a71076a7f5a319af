//! How a cluster's view follows its probes and its switchover policy: the topology events a
//! probe causes (the view before it against the view after it) and the policy's actions
//! applied to the view. Whatever a policy answers, the host keeps two rules here: traffic
//! goes only to the node the probes confirm as primary (`move-to` another node is ignored,
//! and a primary that stops being confirmed is dropped at once), and a node that claims to
//! be primary on an older timeline is fenced.

use std::time::Instant;

use super::{Cluster, ClusterView};
use crate::policy::switchover::{Action, TopologyEvent};
use crate::policy::topology::{choose_primary, Role, Verdict};

/// Recomputes the confirmed primary after a probe of `probed` and returns the events that
/// causes, in the order the switchover policy should see them.
pub(super) fn follow_probes(old: &ClusterView, view: &mut ClusterView, probed: usize) -> Vec<TopologyEvent> {
    let inputs: Vec<(Verdict, u32)> = view
        .nodes
        .iter()
        .map(|n| (n.verdict, n.sample.timeline))
        .collect();
    let (candidate, older) = choose_primary(&inputs, old.candidate);
    view.candidate = candidate;
    for (i, n) in view.nodes.iter_mut().enumerate() {
        n.older_timeline = older.contains(&i);
    }
    let mut events = Vec::new();
    if let Some(p) = old.primary.filter(|&p| candidate != Some(p)) {
        view.primary = None;
        // A node the configuration named primary and no probe had confirmed yet is not
        // lost: at start-up the probes merely found the primary elsewhere (or not yet).
        if old.nodes[p].last_probe.is_some() {
            events.push(if older.contains(&p) {
                TopologyEvent::Demoted(p)
            } else {
                TopologyEvent::PrimaryLost(p)
            });
        }
    }
    if let Some(c) = candidate.filter(|&c| old.candidate != Some(c)) {
        events.push(TopologyEvent::PrimaryConfirmed(c));
    }
    for &f in &older {
        if !old.nodes[f].older_timeline && old.primary != Some(f) {
            events.push(TopologyEvent::Demoted(f));
        }
    }
    let changed = {
        let (before, after) = (&old.nodes[probed], &view.nodes[probed]);
        before.verdict != after.verdict || before.sample.reachable != after.sample.reachable
    };
    if changed && events.iter().all(|e| e.node() != Some(probed)) {
        events.push(TopologyEvent::NodeChanged(probed));
    }
    events
}

/// Applies one switchover action to `view` (the hold goes to `cluster`'s hold state).
pub(super) fn apply(cluster: &Cluster, view: &mut ClusterView, action: Action) {
    match action {
        Action::Hold(plan) => cluster.start_hold(plan),
        Action::Resume => {
            cluster.release_hold();
        }
        // The policy facade passes a move only to the node the probes confirm.
        Action::MoveTo(n) => {
            view.primary = Some(n);
            view.nodes[n].fenced_by_policy = false;
        }
        Action::Fence(n) => {
            view.nodes[n].fenced_by_policy = true;
            if view.primary == Some(n) {
                view.primary = None;
            }
        }
        Action::Drain(n) => view.nodes[n].drained_at = Some(Instant::now()),
    }
}

/// Derived fields: fencing, the newest timeline seen (it never goes back) and replica lag
/// behind the confirmed primary in bytes.
pub(super) fn refresh(view: &mut ClusterView) {
    let primary_lsn = view.candidate.map_or(0, |p| view.nodes[p].sample.lsn);
    view.newest_timeline = view
        .nodes
        .iter()
        .filter(|n| n.sample.reachable)
        .map(|n| n.sample.timeline)
        .max()
        .unwrap_or(0)
        .max(view.newest_timeline);
    for n in &mut view.nodes {
        n.fenced = n.older_timeline || n.fenced_by_policy;
        n.lag_bytes = match n.verdict.role {
            Role::Replica if primary_lsn > 0 => primary_lsn.saturating_sub(n.sample.lsn),
            _ => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::topology::{evaluate, ProbeSample};
    use crate::topology::NodeState;

    fn node(reachable: bool, in_recovery: bool, timeline: u32) -> NodeState {
        let sample = ProbeSample {
            reachable,
            in_recovery,
            timeline,
            ..Default::default()
        };
        NodeState {
            sample,
            verdict: evaluate(&sample),
            last_probe: Some(std::time::SystemTime::now()),
            ..Default::default()
        }
    }

    fn view(primary: Option<usize>, nodes: Vec<NodeState>) -> ClusterView {
        ClusterView {
            generation: 1,
            primary,
            candidate: primary,
            newest_timeline: 0,
            nodes,
        }
    }

    #[test]
    fn a_stopped_primary_is_lost_and_a_promoted_replica_confirmed() {
        let old = view(Some(0), vec![node(true, false, 1), node(true, true, 1)]);
        let mut stopped = view(Some(0), vec![node(false, false, 0), node(true, true, 1)]);
        let events = follow_probes(&old, &mut stopped, 0);
        assert_eq!(events, vec![TopologyEvent::PrimaryLost(0)]);
        assert_eq!((stopped.primary, stopped.candidate), (None, None));

        let mut promoted = stopped.clone();
        promoted.nodes[1] = node(true, false, 2);
        let events = follow_probes(&stopped, &mut promoted, 1);
        assert_eq!(events, vec![TopologyEvent::PrimaryConfirmed(1)]);
        assert_eq!((promoted.primary, promoted.candidate), (None, Some(1)));
    }

    #[test]
    fn an_old_primary_on_an_older_timeline_is_demoted() {
        let old = view(Some(0), vec![node(true, false, 1), node(true, true, 1)]);
        let mut both = old.clone();
        both.nodes[1] = node(true, false, 2);
        let events = follow_probes(&old, &mut both, 1);
        assert_eq!(
            events,
            vec![TopologyEvent::Demoted(0), TopologyEvent::PrimaryConfirmed(1)]
        );
        refresh(&mut both);
        assert!(both.nodes[0].fenced && !both.nodes[1].fenced);
    }

    #[test]
    fn a_configured_primary_never_probed_is_not_lost() {
        let mut configured = node(true, false, 0);
        configured.last_probe = None;
        let old = view(Some(0), vec![configured, node(true, true, 1)]);
        let mut found = old.clone();
        found.nodes[0] = node(true, true, 1);
        found.nodes[1] = node(true, false, 1);
        let events = follow_probes(&old, &mut found, 1);
        assert_eq!(events, vec![TopologyEvent::PrimaryConfirmed(1)]);
        assert_eq!(found.primary, None, "until the policy moves traffic");
    }

    #[test]
    fn a_replica_going_away_is_a_node_change() {
        let old = view(Some(0), vec![node(true, false, 1), node(true, true, 1)]);
        let mut gone = old.clone();
        gone.nodes[1] = node(false, false, 0);
        assert_eq!(
            follow_probes(&old, &mut gone, 1),
            vec![TopologyEvent::NodeChanged(1)]
        );
        assert_eq!(gone.primary, Some(0));
        let mut same = old.clone();
        assert!(follow_probes(&old, &mut same, 0).is_empty());
    }
}
