//! Hostile test plugin: every hook panics. The panic message goes to stderr (the host's log),
//! then the instance traps (`unreachable`: wasm32-wasip2 cannot unwind). The host must survive
//! the trap and answer with the built-in policy: for `pool-mode` on the data path, for
//! `health` and `switchover` in the topology, for `retry` in the session (and `pipelining`
//! is taken as no). Built for the
//! `bundle` world so one component can be configured for any hook.
//!
//! The kit's panic hook writes `hostile-trap: panicked at ...: <message>` to stderr.

use switchyard_plugin_kit::Settings;

switchyard_plugin_kit::plugin!(Plugin, world = "bundle");

use bindings::exports::switchyard::policy::health::{Guest as Health, ProbeSample, Verdict};
use bindings::exports::switchyard::policy::pipelining::Guest as Pipelining;
use bindings::exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyDecision};
use bindings::exports::switchyard::policy::retry::{Guest as Retry, RetryDecision};
use bindings::exports::switchyard::policy::router::{Guest as Router, RouteDecision};
use bindings::exports::switchyard::policy::switchover::{Action, Guest as Switchover, TopologyEvent};
use bindings::switchyard::policy::types::{ErrorInfo, NodeInfo, QueryInfo, SessionInfo};

struct Plugin;

impl switchyard_plugin_kit::Plugin for Plugin {
    const NAME: &'static str = "hostile-trap";
    const SETTINGS: &'static [&'static str] = &[];
    fn new(_: &Settings<'_>) -> Result<Plugin, String> {
        Ok(Plugin)
    }
}

impl PoolMode for Plugin {
    fn on_ready(session: SessionInfo, statements: u32) -> ReadyDecision {
        panic!(
            "hostile trap plugin: deliberate panic in on-ready (session {}, {statements} statements)",
            session.id
        );
    }
}

impl Pipelining for Plugin {
    fn may_pipeline(session: SessionInfo) -> bool {
        panic!(
            "hostile trap plugin: deliberate panic in may-pipeline (session {})",
            session.id
        );
    }
}

impl Router for Plugin {
    fn route(session: SessionInfo, _query: QueryInfo, _nodes: Vec<NodeInfo>) -> RouteDecision {
        panic!(
            "hostile trap plugin: deliberate panic in route (session {})",
            session.id
        );
    }
}

impl Retry for Plugin {
    fn on_error(_session: SessionInfo, error: ErrorInfo) -> RetryDecision {
        panic!(
            "hostile trap plugin: deliberate panic in on-error ({})",
            error.sqlstate
        );
    }
}

impl Switchover for Plugin {
    fn on_event(_event: TopologyEvent, nodes: Vec<NodeInfo>) -> Vec<Action> {
        panic!(
            "hostile trap plugin: deliberate panic in on-event ({} nodes)",
            nodes.len()
        );
    }
}

impl Health for Plugin {
    fn evaluate(sample: ProbeSample) -> Verdict {
        panic!(
            "hostile trap plugin: deliberate panic in evaluate (node {})",
            sample.node
        );
    }
}
