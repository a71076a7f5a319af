//! The policy seam: one trait per hook, each decision one documented method whose default
//! body is the built-in answer (the model: pingora's `ProxyHttp`). [`BuiltIn`] overrides
//! nothing; a plugin (`plugins::Plugin`) overrides the decisions of the hooks it serves.
//! Nothing here calls a hook: the proxy asks the facade ([`super::Policies`]), which picks
//! the implementation, falls back to the built-in when a call fails and applies the safety
//! clamps.

use std::time::Duration;

use switchyard_protocol::TransactionStatus;

use super::pool_mode::{self, ReadyAction, ReadyFacts};
use super::retry::{self, FailedRequest, RetryDecision};
use super::router::{self, Route, RouteRequest};
use super::session::SessionFacts;
use super::switchover::{self, Action, NodeInfo, TopologyEvent};
use super::topology::{self, ProbeInput, Verdict};
use crate::config::PoolMode;

/// Why a hook gave no decision (a plugin trapped, ran out of time or memory, answered
/// with something unusable, or its breaker is open). The facade answers with the
/// built-in decision instead.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HookError(Box<dyn std::error::Error + Send + Sync>);

impl HookError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> HookError {
        HookError(Box::new(error))
    }
}

/// Whatever answers a hook: the built-in or a plugin.
pub trait Decider: Send + Sync {
    /// The name decision logs give it (`built-in`, or the plugin's name).
    fn name(&self) -> &str;
}

/// `pool-mode`: what happens to a session's server at a ReadyForQuery boundary.
pub trait PoolModeHook: Decider {
    /// The decision at a boundary with `facts`, for a database configured with pool mode
    /// `mode`. Built-in: [`pool_mode::decide`] (transaction pooling releases an idle
    /// server that holds none of the client's state, and so on). Whatever the answer, a
    /// server holding the client's state stays with it (the facade sees to it).
    fn on_ready(
        &self,
        session: &mut SessionFacts,
        mode: PoolMode,
        facts: ReadyFacts,
    ) -> Result<ReadyAction, HookError> {
        let _ = session;
        Ok(pool_mode::decide(mode, facts))
    }

    /// Whether the session's standalone statements may be pipelined (`pool::pipeline`),
    /// asked once when it starts; `setting` is the pool's `pipeline`. Built-in: `setting`.
    fn may_pipeline(&self, session: &mut SessionFacts, setting: bool) -> Result<bool, HookError> {
        let _ = session;
        Ok(setting)
    }
}

/// `retry`: what to do with a request its server failed.
pub trait RetryHook: Decider {
    /// The decision for `failed`, with `budget` the longest the request may take in all.
    /// Built-in: [`retry::decide`]. Whatever the answer, only what provably did not take
    /// effect runs again ([`retry::allowed`], applied by the facade).
    fn on_error(
        &self,
        session: &mut SessionFacts,
        status: TransactionStatus,
        failed: &FailedRequest,
        budget: Duration,
    ) -> Result<RetryDecision, HookError> {
        let _ = (session, status);
        Ok(retry::decide(failed, budget))
    }
}

/// `router`: which node runs a session's next transaction.
pub trait RouterHook: Decider {
    /// The route for `request`, the session's next transaction or autocommit statement, in
    /// a cluster whose nodes are `nodes`. Built-in: [`router::route`] (reads to replicas
    /// when the database's `read_routing` allows it, else the primary). Whatever the
    /// answer, work the host did not classify as fit for a replica runs on the primary
    /// ([`router::clamp`], applied by the facade).
    fn route(
        &self,
        session: &mut SessionFacts,
        request: &RouteRequest,
        nodes: &[NodeInfo],
    ) -> Result<Route, HookError> {
        let _ = (session, nodes);
        Ok(router::route(request))
    }
}

/// `health`: the verdict on one probe of one node.
pub trait HealthHook: Decider {
    /// What the node probed in `input` is good for. Built-in: [`topology::evaluate`].
    fn evaluate(&self, input: &ProbeInput<'_>) -> Result<Verdict, HookError> {
        Ok(topology::evaluate(&input.sample))
    }
}

/// `switchover`: what a topology event does to a cluster's traffic.
pub trait SwitchoverHook: Decider {
    /// The actions for `event` in a cluster whose nodes are `nodes`, applied in order.
    /// Built-in: [`switchover::on_event`] with the cluster's `hold_timeout`. Whatever the
    /// answer, traffic moves only to the primary the probes confirm (the facade drops any
    /// other `move-to`).
    fn on_event(
        &self,
        event: TopologyEvent,
        nodes: &[NodeInfo],
        hold_timeout: Duration,
    ) -> Result<Vec<Action>, HookError> {
        Ok(switchover::on_event(event, nodes, hold_timeout))
    }
}

/// The built-in policies: every decision is the trait's default.
pub struct BuiltIn;

impl Decider for BuiltIn {
    fn name(&self) -> &str {
        "built-in"
    }
}

impl PoolModeHook for BuiltIn {}
impl RetryHook for BuiltIn {}
impl RouterHook for BuiltIn {}
impl HealthHook for BuiltIn {}
impl SwitchoverHook for BuiltIn {}
