//! Hostile test plugin: every hook panics. The panic message goes to stderr (the host's log),
//! then the instance traps (`unreachable`: wasm32-wasip2 cannot unwind). The host must survive
//! the trap and answer with the built-in policy: for `pool-mode` on the data path, for
//! `health` and `switchover` in the topology, for `retry` in the session. Built for the
//! `bundle` world so one component can be configured for any hook.
//!
//! `init` installs a panic hook that only writes to stderr: std's default hook first reads
//! the environment (`RUST_BACKTRACE`), which traps before printing anything under a host that
//! gives plugins stdout/stderr and nothing else.

// Component glue only: the host target cannot link a cdylib whose export names contain ':'.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "bundle",
    path: "../../../wit",
});

use exports::switchyard::policy::health::{Guest as Health, ProbeSample, Verdict};
use exports::switchyard::policy::lifecycle::Guest as Lifecycle;
use exports::switchyard::policy::pool_mode::{Guest as PoolMode, ReadyDecision};
use exports::switchyard::policy::retry::{Guest as Retry, RetryDecision};
use exports::switchyard::policy::router::{Guest as Router, RouteDecision};
use exports::switchyard::policy::switchover::{Action, Guest as Switchover, TopologyEvent};
use switchyard::policy::types::{ErrorInfo, NodeInfo, QueryInfo, SessionInfo};

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
        Ok(())
    }

    fn version() -> String {
        concat!(env!("CARGO_PKG_VERSION"), "+trap").to_string()
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

export!(Plugin);
