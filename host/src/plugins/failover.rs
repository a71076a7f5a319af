//! The failover hooks in the proxy's own types: `health.evaluate` (a verdict per probe),
//! `switchover.on-event` (actions for a topology event) and `retry.on-error` (what to do with
//! a request its server failed). The topology and the session call these and fall back to
//! the built-in policies in `policy/` when a call fails; nothing outside this module sees
//! the generated WIT types.

use std::time::Duration;

use switchyard_protocol::TransactionStatus;

use super::bindings::exports::switchyard::policy::{health, retry, switchover};
use super::bindings::switchyard::policy::types::{
    ErrorInfo, ErrorPhase, Fate as WitFate, NodeInfo as WitNodeInfo, Role as WitRole, SessionInfo,
};
use super::bindings::TxStatus;
use super::{CallError, Plugin, SessionFacts};
use crate::policy::retry::{FailedRequest, Fate, Phase, RetryDecision};
use crate::policy::switchover::{Action, HoldPlan, NodeInfo, TopologyEvent};
use crate::policy::topology::{ProbeInput, Role, Verdict};

/// A hook's answer names a node the cluster does not have.
fn no_such_node(hook: &str, node: u32, count: usize) -> CallError {
    CallError::Failed(wasmtime::format_err!(
        "{hook} answered with node {node}, but the cluster has {count} nodes"
    ))
}

fn missing(hook: &str) -> wasmtime::Error {
    wasmtime::format_err!("the component does not export {hook}")
}

fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn wit_role(role: Role) -> WitRole {
    match role {
        Role::Primary => WitRole::Primary,
        Role::Replica => WitRole::Replica,
        Role::Unknown => WitRole::Unknown,
    }
}

impl Plugin {
    /// The `health` hook: the verdict on one probe of one node.
    pub fn evaluate(&self, input: &ProbeInput<'_>) -> Result<Verdict, CallError> {
        let s = &input.sample;
        let sample = health::ProbeSample {
            node: index(input.node),
            reachable: s.reachable,
            in_recovery: s.in_recovery,
            timeline: s.timeline,
            lsn: s.lsn,
            primary_lsn: input.primary_lsn,
            latency_us: input
                .latency
                .map_or(0, |l| u32::try_from(l.as_micros()).unwrap_or(u32::MAX)),
            consecutive_failures: s.consecutive_failures,
            error: input.error.map(str::to_string),
        };
        let verdict = self.instances.call(None, |i| {
            let hook = i.hooks.health.as_ref().ok_or_else(|| missing("health"))?;
            hook.call_evaluate(&mut i.store, &sample)
        })?;
        Ok(Verdict {
            role: match verdict.role {
                WitRole::Primary => Role::Primary,
                WitRole::Replica => Role::Replica,
                WitRole::Unknown => Role::Unknown,
            },
            usable_for_reads: verdict.usable_for_reads,
            usable_for_writes: verdict.usable_for_writes,
        })
    }

    /// The `switchover` hook: the actions for a topology event of a cluster whose nodes are
    /// `nodes`. An action naming a node the cluster does not have fails the call (the
    /// built-in policy answers instead).
    pub fn on_event(&self, event: TopologyEvent, nodes: &[NodeInfo]) -> Result<Vec<Action>, CallError> {
        use switchover::{Action as WitAction, TopologyEvent as E};
        let wit_event = match event {
            TopologyEvent::PlannedStop(n) => E::PlannedStop(index(n)),
            TopologyEvent::PrimaryLost(n) => E::PrimaryLost(index(n)),
            TopologyEvent::PrimaryConfirmed(n) => E::PrimaryConfirmed(index(n)),
            TopologyEvent::Demoted(n) => E::Demoted(index(n)),
            TopologyEvent::NodeChanged(n) => E::NodeChanged(index(n)),
            TopologyEvent::HoldExpired => E::HoldExpired,
        };
        let infos: Vec<WitNodeInfo> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| WitNodeInfo {
                id: index(i),
                role: wit_role(n.role),
                reachable: n.reachable,
                fenced: n.fenced,
                timeline: n.timeline,
                lsn: n.lsn,
                lag_bytes: n.lag_bytes,
            })
            .collect();
        let answer = self.instances.call(None, |i| {
            let hook = i.hooks.switchover.as_ref().ok_or_else(|| missing("switchover"))?;
            hook.call_on_event(&mut i.store, wit_event, &infos)
        })?;
        let node = |n: u32| -> Result<usize, CallError> {
            let i = n as usize;
            if i < nodes.len() {
                Ok(i)
            } else {
                Err(self
                    .instances
                    .failed(no_such_node("switchover.on-event", n, nodes.len())))
            }
        };
        answer
            .into_iter()
            .map(|a| {
                Ok(match a {
                    WitAction::Hold(plan) => Action::Hold(HoldPlan {
                        hold: Duration::from_millis(plan.hold_ms.into()),
                        drain: Duration::from_millis(plan.drain_ms.into()),
                    }),
                    WitAction::MoveTo(n) => Action::MoveTo(node(n)?),
                    WitAction::Resume => Action::Resume,
                    WitAction::Fence(n) => Action::Fence(node(n)?),
                    WitAction::Drain(n) => Action::Drain(node(n)?),
                })
            })
            .collect()
    }

    /// The `retry` hook: what to do with a request its server failed. The answer is the
    /// plugin's; the caller still retries only what [`crate::policy::retry::allowed`] allows.
    pub fn on_error(
        &self,
        session: &mut SessionFacts,
        status: TransactionStatus,
        failed: &FailedRequest,
    ) -> Result<RetryDecision, CallError> {
        let info = SessionInfo {
            id: session.id,
            tx_status: match status {
                TransactionStatus::Idle => TxStatus::Idle,
                TransactionStatus::InTransaction => TxStatus::InTransaction,
                TransactionStatus::Failed => TxStatus::Failed,
            },
            holds_server_state: false,
            read_only: session.read_only,
            last_commit_lsn: 0,
        };
        let error = ErrorInfo {
            sqlstate: failed.sqlstate.clone(),
            message: failed.message.clone(),
            phase: match failed.phase {
                Phase::Connect => ErrorPhase::Connect,
                Phase::BeforeAnyResult => ErrorPhase::BeforeAnyResult,
                Phase::MidResult => ErrorPhase::MidResult,
                Phase::Commit => ErrorPhase::Commit,
            },
            fate: match failed.fate {
                Fate::NotSent => WitFate::NotSent,
                Fate::NotApplied => WitFate::NotApplied,
                Fate::Unknown => WitFate::Unknown,
                Fate::Committed => WitFate::Committed,
            },
            node: failed.node,
            attempt: failed.attempt,
            elapsed_ms: millis(failed.elapsed),
        };
        let decision = self.instances.call(Some(session.details.clone()), |i| {
            let hook = i.hooks.retry.as_ref().ok_or_else(|| missing("retry"))?;
            hook.call_on_error(&mut i.store, info, &error)
        })?;
        Ok(match decision {
            retry::RetryDecision::Surface => RetryDecision::Surface,
            retry::RetryDecision::RetryAfter(ms) => {
                RetryDecision::RetryAfter(Duration::from_millis(ms.into()))
            }
            retry::RetryDecision::Hold(ms) => RetryDecision::Hold(Duration::from_millis(ms.into())),
        })
    }
}
