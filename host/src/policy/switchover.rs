//! Built-in switchover policy: what the proxy does with a cluster's traffic when its topology
//! changes (the host-side twins of the WIT `switchover` records, and the decision a
//! `switchover` plugin replaces). Hold new transactions while there is no primary, move to
//! the primary the probes confirm, fence a node that claims to be primary on an older
//! timeline, and close servers on nodes that stopped being the primary.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::topology::Role;

/// Something the topology learned about a cluster (the twin of the WIT `topology-event`).
/// Nodes are indices into the cluster's `nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyEvent {
    /// An operator or HA manager announced a planned stop of this node (admin `PAUSE NODE`,
    /// the proxy's own `SWITCHOVER`).
    PlannedStop(usize),
    /// The primary stopped answering probes or stopped being writable.
    PrimaryLost(usize),
    /// The probes confirm this node as primary (not in recovery, newest timeline).
    PrimaryConfirmed(usize),
    /// This node claims to be primary on an older timeline than the primary.
    Demoted(usize),
    /// This node's verdict changed without a change of primary.
    NodeChanged(usize),
    /// The hold started for an earlier event ran out of budget.
    HoldExpired,
}

impl TopologyEvent {
    pub fn name(self) -> &'static str {
        match self {
            TopologyEvent::PlannedStop(_) => "planned-stop",
            TopologyEvent::PrimaryLost(_) => "primary-lost",
            TopologyEvent::PrimaryConfirmed(_) => "primary-confirmed",
            TopologyEvent::Demoted(_) => "demoted",
            TopologyEvent::NodeChanged(_) => "node-changed",
            TopologyEvent::HoldExpired => "hold-expired",
        }
    }

    /// The node the event is about, if any.
    pub fn node(self) -> Option<usize> {
        match self {
            TopologyEvent::PlannedStop(n)
            | TopologyEvent::PrimaryLost(n)
            | TopologyEvent::PrimaryConfirmed(n)
            | TopologyEvent::Demoted(n)
            | TopologyEvent::NodeChanged(n) => Some(n),
            TopologyEvent::HoldExpired => None,
        }
    }
}

/// How long new transactions wait, and how long running ones may take to finish (the twin
/// of the WIT `hold-plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldPlan {
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
}

/// What the host does about an event (the twin of the WIT `action`), applied in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Start (or extend) holding new transactions of the cluster's databases.
    Hold(HoldPlan),
    /// New transactions go to this node, which the probes must confirm as primary.
    MoveTo(usize),
    /// Release held transactions.
    Resume,
    /// No writes to this node until it is moved to again.
    Fence(usize),
    /// Close servers on this node when they come back to the pool.
    Drain(usize),
}

/// One node as a switchover policy sees it (the twin of the WIT `node-info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub role: Role,
    pub reachable: bool,
    pub fenced: bool,
    pub timeline: u32,
    pub lsn: u64,
    pub lag_bytes: u64,
    /// The node new transactions go to now.
    pub primary: bool,
}

/// The built-in `switchover.on-event`, which is what the proxy did before the hook
/// existed: hold for `hold_timeout` when the primary goes away or is about to (a planned
/// stop of the primary, which also lets running transactions finish for as long), move to
/// and resume on the confirmed primary, fence and drain a demoted node. A planned stop of
/// a node that is not the primary, a verdict change and an expired hold change nothing (the
/// pools then wait for a primary on their own, up to `hold_timeout` per transaction).
pub fn on_event(event: TopologyEvent, nodes: &[NodeInfo], hold_timeout: Duration) -> Vec<Action> {
    match event {
        TopologyEvent::PlannedStop(n) if nodes.get(n).is_some_and(|n| n.primary) => vec![
            Action::Hold(HoldPlan {
                hold: hold_timeout,
                drain: hold_timeout,
            }),
            Action::Drain(n),
        ],
        TopologyEvent::PrimaryLost(n) => vec![
            Action::Hold(HoldPlan {
                hold: hold_timeout,
                drain: Duration::ZERO,
            }),
            Action::Drain(n),
        ],
        TopologyEvent::PrimaryConfirmed(n) => vec![Action::MoveTo(n), Action::Resume],
        TopologyEvent::Demoted(n) => vec![Action::Fence(n), Action::Drain(n)],
        TopologyEvent::PlannedStop(_) | TopologyEvent::NodeChanged(_) | TopologyEvent::HoldExpired => {
            Vec::new()
        }
    }
}

/// Actions as the decision log shows them, with node names from `name`.
pub struct Described<'a, F>(pub &'a [Action], pub F);

impl<F: Fn(usize) -> String> fmt::Display for Described<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        for (i, action) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match *action {
                Action::Hold(plan) => write!(
                    f,
                    "hold {} ms, drain {} ms",
                    plan.hold.as_millis(),
                    plan.drain.as_millis()
                )?,
                Action::MoveTo(n) => write!(f, "move to {}", (self.1)(n))?,
                Action::Resume => f.write_str("resume")?,
                Action::Fence(n) => write!(f, "fence {}", (self.1)(n))?,
                Action::Drain(n) => write!(f, "drain {}", (self.1)(n))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(30);

    fn nodes(primary: Option<usize>) -> Vec<NodeInfo> {
        (0..2)
            .map(|i| NodeInfo {
                role: if primary == Some(i) {
                    Role::Primary
                } else {
                    Role::Replica
                },
                reachable: true,
                fenced: false,
                timeline: 1,
                lsn: 0,
                lag_bytes: 0,
                primary: primary == Some(i),
            })
            .collect()
    }

    #[test]
    fn a_lost_primary_holds_and_a_confirmed_one_resumes() {
        let lost = on_event(TopologyEvent::PrimaryLost(0), &nodes(None), HOLD);
        assert_eq!(
            lost,
            vec![
                Action::Hold(HoldPlan {
                    hold: HOLD,
                    drain: Duration::ZERO
                }),
                Action::Drain(0)
            ]
        );
        let confirmed = on_event(TopologyEvent::PrimaryConfirmed(1), &nodes(None), HOLD);
        assert_eq!(confirmed, vec![Action::MoveTo(1), Action::Resume]);
    }

    #[test]
    fn a_planned_stop_holds_only_for_the_primary() {
        let stop = on_event(TopologyEvent::PlannedStop(0), &nodes(Some(0)), HOLD);
        assert!(matches!(stop[0], Action::Hold(p) if p.hold == HOLD && p.drain == HOLD));
        assert!(on_event(TopologyEvent::PlannedStop(1), &nodes(Some(0)), HOLD).is_empty());
    }

    #[test]
    fn a_demoted_node_is_fenced_and_drained() {
        let demoted = on_event(TopologyEvent::Demoted(0), &nodes(Some(1)), HOLD);
        assert_eq!(demoted, vec![Action::Fence(0), Action::Drain(0)]);
        assert!(on_event(TopologyEvent::HoldExpired, &nodes(None), HOLD).is_empty());
        assert!(on_event(TopologyEvent::NodeChanged(1), &nodes(Some(0)), HOLD).is_empty());
    }

    #[test]
    fn the_decision_log_names_nodes() {
        let actions = [
            Action::Hold(HoldPlan {
                hold: HOLD,
                drain: Duration::from_secs(5),
            }),
            Action::Drain(0),
        ];
        let text = Described(&actions, |n| format!("node{n}")).to_string();
        assert_eq!(text, "hold 30000 ms, drain 5000 ms, drain node0");
    }
}
