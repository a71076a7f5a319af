//! The WIT ↔ proxy type conversions, all of them, as `From` impls: the generated WIT types
//! never leave `plugins/`, and each mapping is written once.

use std::time::Duration;

use switchyard_protocol::TransactionStatus;

use super::bindings::exports::switchyard::policy::{health, pool_mode, retry, router, switchover};
use super::bindings::switchyard::policy::types;
use super::instance::CallError;
use crate::policy::pool_mode::ReadyAction;
use crate::policy::retry::{FailedRequest, Fate, Phase, RetryDecision};
use crate::policy::router::Route;
use crate::policy::switchover::{HoldPlan, NodeInfo, TopologyEvent};
use crate::policy::topology::{ProbeInput, Role, Verdict};
use crate::policy::{HookError, SessionDetails};
use crate::sql::route::Kind;

/// A node index or count as the WIT carries it.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl From<CallError> for HookError {
    fn from(e: CallError) -> HookError {
        HookError::new(e)
    }
}

impl From<TransactionStatus> for types::TxStatus {
    fn from(s: TransactionStatus) -> types::TxStatus {
        match s {
            TransactionStatus::Idle => types::TxStatus::Idle,
            TransactionStatus::InTransaction => types::TxStatus::InTransaction,
            TransactionStatus::Failed => types::TxStatus::Failed,
        }
    }
}

impl From<&SessionDetails> for types::SessionDetails {
    fn from(d: &SessionDetails) -> types::SessionDetails {
        types::SessionDetails {
            user: d.user.clone(),
            database: d.database.clone(),
            application_name: d.application_name.clone(),
            client_addr: d.client_addr.clone(),
        }
    }
}

impl From<Role> for types::Role {
    fn from(r: Role) -> types::Role {
        match r {
            Role::Primary => types::Role::Primary,
            Role::Replica => types::Role::Replica,
            Role::Unknown => types::Role::Unknown,
        }
    }
}

impl From<types::Role> for Role {
    fn from(r: types::Role) -> Role {
        match r {
            types::Role::Primary => Role::Primary,
            types::Role::Replica => Role::Replica,
            types::Role::Unknown => Role::Unknown,
        }
    }
}

impl From<pool_mode::ReadyAction> for ReadyAction {
    fn from(a: pool_mode::ReadyAction) -> ReadyAction {
        match a {
            pool_mode::ReadyAction::Release => ReadyAction::Release,
            pool_mode::ReadyAction::Keep => ReadyAction::Keep,
            pool_mode::ReadyAction::RefuseTransaction(message) => ReadyAction::RefuseTransaction(message),
        }
    }
}

impl From<&ProbeInput<'_>> for health::ProbeSample {
    fn from(input: &ProbeInput<'_>) -> health::ProbeSample {
        let s = &input.sample;
        health::ProbeSample {
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
            error: input.error.as_deref().map(str::to_string),
        }
    }
}

impl From<health::Verdict> for Verdict {
    fn from(v: health::Verdict) -> Verdict {
        Verdict {
            role: v.role.into(),
            usable_for_reads: v.usable_for_reads,
            usable_for_writes: v.usable_for_writes,
        }
    }
}

impl From<TopologyEvent> for switchover::TopologyEvent {
    fn from(event: TopologyEvent) -> switchover::TopologyEvent {
        use switchover::TopologyEvent as E;
        match event {
            TopologyEvent::PlannedStop(n) => E::PlannedStop(index(n)),
            TopologyEvent::PrimaryLost(n) => E::PrimaryLost(index(n)),
            TopologyEvent::PrimaryConfirmed(n) => E::PrimaryConfirmed(index(n)),
            TopologyEvent::Demoted(n) => E::Demoted(index(n)),
            TopologyEvent::NodeChanged(n) => E::NodeChanged(index(n)),
            TopologyEvent::HoldExpired => E::HoldExpired,
        }
    }
}

/// A node with its index in the cluster's `nodes`.
impl From<Kind> for types::QueryKind {
    fn from(k: Kind) -> types::QueryKind {
        match k {
            Kind::Read => types::QueryKind::Read,
            Kind::Write => types::QueryKind::Write,
            Kind::Ddl => types::QueryKind::Ddl,
            Kind::TransactionControl => types::QueryKind::TransactionControl,
            Kind::SessionControl => types::QueryKind::SessionControl,
            Kind::Unknown => types::QueryKind::Unknown,
        }
    }
}

/// A `node` is taken as the index it names; the caller checks it against the cluster.
impl From<router::RouteDecision> for Route {
    fn from(d: router::RouteDecision) -> Route {
        match d {
            router::RouteDecision::Primary => Route::Primary,
            router::RouteDecision::Node(n) => Route::Node(n as usize),
            router::RouteDecision::AnyReplica => Route::AnyReplica,
            router::RouteDecision::Wait(ms) => Route::Wait(Duration::from_millis(ms.into())),
            router::RouteDecision::Reject(r) => Route::Reject {
                sqlstate: r.sqlstate,
                message: r.message,
            },
        }
    }
}

impl From<(usize, &NodeInfo)> for types::NodeInfo {
    fn from((i, n): (usize, &NodeInfo)) -> types::NodeInfo {
        types::NodeInfo {
            id: index(i),
            role: n.role.into(),
            reachable: n.reachable,
            fenced: n.fenced,
            timeline: n.timeline,
            lsn: n.lsn,
            lag_bytes: n.lag_bytes,
        }
    }
}

impl From<switchover::HoldPlan> for HoldPlan {
    fn from(plan: switchover::HoldPlan) -> HoldPlan {
        HoldPlan {
            hold: Duration::from_millis(plan.hold_ms.into()),
            drain: Duration::from_millis(plan.drain_ms.into()),
        }
    }
}

impl From<Phase> for types::ErrorPhase {
    fn from(p: Phase) -> types::ErrorPhase {
        match p {
            Phase::Connect => types::ErrorPhase::Connect,
            Phase::BeforeAnyResult => types::ErrorPhase::BeforeAnyResult,
            Phase::MidResult => types::ErrorPhase::MidResult,
            Phase::Commit => types::ErrorPhase::Commit,
        }
    }
}

impl From<Fate> for types::Fate {
    fn from(f: Fate) -> types::Fate {
        match f {
            Fate::NotSent => types::Fate::NotSent,
            Fate::NotApplied => types::Fate::NotApplied,
            Fate::Unknown => types::Fate::Unknown,
            Fate::Committed => types::Fate::Committed,
        }
    }
}

impl From<&FailedRequest> for types::ErrorInfo {
    fn from(f: &FailedRequest) -> types::ErrorInfo {
        types::ErrorInfo {
            sqlstate: f.sqlstate.clone(),
            message: f.message.clone(),
            phase: f.phase.into(),
            fate: f.fate.into(),
            node: f.node,
            attempt: f.attempt,
            elapsed_ms: millis(f.elapsed),
        }
    }
}

impl From<retry::RetryDecision> for RetryDecision {
    fn from(d: retry::RetryDecision) -> RetryDecision {
        match d {
            retry::RetryDecision::Surface => RetryDecision::Surface,
            retry::RetryDecision::RetryAfter(ms) => {
                RetryDecision::RetryAfter(Duration::from_millis(ms.into()))
            }
            retry::RetryDecision::Hold(ms) => RetryDecision::Hold(Duration::from_millis(ms.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_both_ways() {
        for role in [Role::Primary, Role::Replica, Role::Unknown] {
            assert_eq!(Role::from(types::Role::from(role)), role);
        }
    }
}
