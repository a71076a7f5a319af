//! The failover hooks a plugin serves, as the policy traits: `health.evaluate` (a verdict
//! per probe), `switchover.on-event` (actions for a topology event) and `retry.on-error`
//! (what to do with a request its server failed). The facade (`policy::Policies`) asks
//! them and falls back to the built-in policies when a call fails; the WIT types stay in
//! this module and `convert.rs`.

use std::time::Duration;

use switchyard_protocol::TransactionStatus;

use super::bindings::exports::switchyard::policy::{health, switchover};
use super::bindings::switchyard::policy::types::{ErrorInfo, NodeInfo as WitNodeInfo, SessionInfo};
use super::{CallError, Plugin};
use crate::policy::hooks::{HealthHook, RetryHook, SwitchoverHook};
use crate::policy::retry::{FailedRequest, RetryDecision};
use crate::policy::switchover::{Action, NodeInfo, TopologyEvent};
use crate::policy::topology::{ProbeInput, Verdict};
use crate::policy::{HookError, SessionFacts};

/// A hook's answer names a node the cluster does not have.
fn no_such_node(hook: &str, node: u32, count: usize) -> CallError {
    CallError::Failed(wasmtime::format_err!(
        "{hook} answered with node {node}, but the cluster has {count} nodes"
    ))
}

fn missing(hook: &str) -> wasmtime::Error {
    wasmtime::format_err!("the component does not export {hook}")
}

impl HealthHook for Plugin {
    fn evaluate(&self, input: &ProbeInput<'_>) -> Result<Verdict, HookError> {
        let sample = health::ProbeSample::from(input);
        let verdict = self.instances.call(None, |i| {
            let hook = i.hooks.health.as_ref().ok_or_else(|| missing("health"))?;
            hook.call_evaluate(&mut i.store, &sample)
        })?;
        Ok(verdict.into())
    }
}

impl SwitchoverHook for Plugin {
    /// An action naming a node the cluster does not have fails the call (the built-in
    /// policy answers instead). The plugin gets no `hold_timeout`: it holds for as long
    /// as it decides.
    fn on_event(
        &self,
        event: TopologyEvent,
        nodes: &[NodeInfo],
        _hold_timeout: Duration,
    ) -> Result<Vec<Action>, HookError> {
        use switchover::Action as WitAction;
        let wit_event = switchover::TopologyEvent::from(event);
        let infos: Vec<WitNodeInfo> = nodes.iter().enumerate().map(WitNodeInfo::from).collect();
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
        let actions: Result<Vec<Action>, CallError> = answer
            .into_iter()
            .map(|a| {
                Ok(match a {
                    WitAction::Hold(plan) => Action::Hold(plan.into()),
                    WitAction::MoveTo(n) => Action::MoveTo(node(n)?),
                    WitAction::Resume => Action::Resume,
                    WitAction::Fence(n) => Action::Fence(node(n)?),
                    WitAction::Drain(n) => Action::Drain(node(n)?),
                })
            })
            .collect();
        Ok(actions?)
    }
}

impl RetryHook for Plugin {
    /// The answer is the plugin's; the facade still retries only what
    /// [`crate::policy::retry::allowed`] allows.
    fn on_error(
        &self,
        session: &mut SessionFacts,
        status: TransactionStatus,
        failed: &FailedRequest,
        _budget: Duration,
    ) -> Result<RetryDecision, HookError> {
        let info = SessionInfo {
            id: session.id(),
            tx_status: status.into(),
            holds_server_state: false,
            read_only: session.read_only(),
            last_commit_lsn: 0,
        };
        let error = ErrorInfo::from(failed);
        let decision = self.instances.call(Some(session.details().clone()), |i| {
            let hook = i.hooks.retry.as_ref().ok_or_else(|| missing("retry"))?;
            hook.call_on_error(&mut i.store, info, &error)
        })?;
        Ok(decision.into())
    }
}
