//! Built-in health and topology policy: a verdict per probe sample, and which node is the
//! primary. Pure functions of the samples, like the `health` and `switchover` plugins that
//! can replace them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A node's role as the probes show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Replica,
    #[default]
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        }
    }
}

/// One probe of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// The probe connected and answered.
    pub reachable: bool,
    pub in_recovery: bool,
    pub timeline: u32,
    /// Current WAL LSN on a primary, last replayed LSN on a replica.
    pub lsn: u64,
    /// Failed probes in a row, this one included (0 when it answered).
    pub consecutive_failures: u32,
}

/// What a health policy judges: one probe of one node, with what the host knows around it
/// (the twin of the WIT `probe-sample`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInput<'a> {
    /// Index of the node in its cluster's `nodes`.
    pub node: usize,
    pub sample: ProbeSample,
    /// The primary's last known WAL position (0 when none), to judge a replica's lag.
    pub primary_lsn: u64,
    /// Round trip of the probe (none when it failed).
    #[serde(with = "humantime_serde")]
    pub latency: Option<std::time::Duration>,
    /// Why the probe failed.
    pub error: Option<Cow<'a, str>>,
}

/// What a node is good for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub role: Role,
    pub usable_for_reads: bool,
    pub usable_for_writes: bool,
}

/// The built-in `health.evaluate`: a node that answered is a primary when not in recovery,
/// a replica otherwise; a node that did not answer is unknown and unusable.
pub fn evaluate(sample: &ProbeSample) -> Verdict {
    match (sample.reachable, sample.in_recovery) {
        (false, _) => Verdict::default(),
        (true, true) => Verdict {
            role: Role::Replica,
            usable_for_reads: true,
            usable_for_writes: false,
        },
        (true, false) => Verdict {
            role: Role::Primary,
            usable_for_reads: true,
            usable_for_writes: true,
        },
    }
}

/// The primary among `nodes` (verdict and timeline of each): of the nodes usable for
/// writes, the one on the newest timeline. On a tie the current primary stays (no flapping);
/// otherwise the first listed wins. Every other node that claims to be primary is returned
/// as fenced: it is on an older timeline (a demoted primary not yet restarted as a replica)
/// and must not get writes.
pub fn choose_primary(nodes: &[(Verdict, u32)], current: Option<usize>) -> (Option<usize>, Vec<usize>) {
    let writable: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].0.usable_for_writes)
        .collect();
    let Some(newest) = writable.iter().map(|&i| nodes[i].1).max() else {
        return (None, Vec::new());
    };
    let candidates: Vec<usize> = writable
        .iter()
        .copied()
        .filter(|&i| nodes[i].1 == newest)
        .collect();
    let primary = match current {
        Some(c) if candidates.contains(&c) => c,
        _ => candidates[0],
    };
    let fenced = writable.into_iter().filter(|&i| i != primary).collect();
    (Some(primary), fenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(reachable: bool, in_recovery: bool, timeline: u32) -> (Verdict, u32) {
        let sample = ProbeSample {
            reachable,
            in_recovery,
            timeline,
            ..Default::default()
        };
        (evaluate(&sample), timeline)
    }

    #[test]
    fn verdicts_follow_recovery_and_reachability() {
        assert_eq!(node(true, false, 1).0.role, Role::Primary);
        assert!(node(true, false, 1).0.usable_for_writes);
        assert_eq!(node(true, true, 1).0.role, Role::Replica);
        assert!(!node(true, true, 1).0.usable_for_writes);
        assert!(node(true, true, 1).0.usable_for_reads);
        assert_eq!(node(false, false, 1).0, Verdict::default());
    }

    #[test]
    fn the_only_writable_node_is_primary() {
        let nodes = [node(true, true, 1), node(true, false, 1)];
        assert_eq!(choose_primary(&nodes, Some(0)), (Some(1), vec![]));
    }

    #[test]
    fn no_writable_node_means_no_primary() {
        let nodes = [node(false, false, 1), node(true, true, 1)];
        assert_eq!(choose_primary(&nodes, Some(0)), (None, vec![]));
    }

    #[test]
    fn a_promoted_replica_wins_over_the_old_primary_and_fences_it() {
        // After `pg_ctl promote`, both nodes are out of recovery for a moment; the promoted
        // one is on the newer timeline.
        let nodes = [node(true, false, 1), node(true, false, 2)];
        assert_eq!(choose_primary(&nodes, Some(0)), (Some(1), vec![0]));
    }

    #[test]
    fn a_tie_keeps_the_current_primary() {
        let nodes = [node(true, false, 3), node(true, false, 3)];
        assert_eq!(choose_primary(&nodes, Some(1)), (Some(1), vec![0]));
        assert_eq!(choose_primary(&nodes, None), (Some(0), vec![1]));
    }
}
