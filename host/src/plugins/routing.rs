//! The `router` hook a plugin serves, as the policy trait: `router.route` decides where a
//! session's next transaction runs. The facade asks it, falls back to the built-in router
//! when a call fails, and keeps writes on the primary whatever it answers.

use super::bindings::switchyard::policy::types::{NodeInfo as WitNodeInfo, QueryInfo, SessionInfo, TxStatus};
use super::{CallError, Plugin};
use crate::policy::hooks::RouterHook;
use crate::policy::router::{Route, RouteRequest};
use crate::policy::switchover::NodeInfo;
use crate::policy::{HookError, SessionFacts};

impl RouterHook for Plugin {
    /// A `node` the cluster does not have fails the call (the built-in answers instead).
    fn route(
        &self,
        session: &mut SessionFacts,
        request: &RouteRequest,
        nodes: &[NodeInfo],
    ) -> Result<Route, HookError> {
        let info = SessionInfo {
            id: session.id(),
            tx_status: if request.in_transaction {
                TxStatus::InTransaction
            } else {
                TxStatus::Idle
            },
            holds_server_state: false,
            read_only: session.read_only(),
            last_commit_lsn: request.last_commit_lsn,
        };
        let query = QueryInfo {
            kind: request.kind.into(),
            in_transaction: request.in_transaction,
            sql: None,
        };
        let infos: Vec<WitNodeInfo> = nodes.iter().enumerate().map(WitNodeInfo::from).collect();
        let decision = self.instances.call(Some(session.details().clone()), |i| {
            let hook = i
                .hooks
                .router
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the component does not export router"))?;
            hook.call_route(&mut i.store, info, &query, &infos)
        })?;
        match Route::from(decision) {
            Route::Node(n) if n >= nodes.len() => Err(self
                .instances
                .failed(CallError::Failed(wasmtime::format_err!(
                    "router.route answered with node {n}, but the cluster has {} nodes",
                    nodes.len()
                )))
                .into()),
            route => Ok(route),
        }
    }
}
