//! The WIT mapping: world `router-plugin`, its `route` onto [`Router::route`].

use switchyard_plugin_kit::Plugin;

use crate::policy::{Kind, Node, Request, Role, Route, Router};

switchyard_plugin_kit::plugin!(Router, world = "router-plugin");

use bindings::exports::switchyard::policy::router::{Guest, RouteDecision};
use bindings::switchyard::policy::host;
use bindings::switchyard::policy::types::{NodeInfo, QueryInfo, QueryKind, Role as WitRole, SessionInfo};

impl Guest for Router {
    fn route(session: SessionInfo, query: QueryInfo, nodes: Vec<NodeInfo>) -> RouteDecision {
        let request = Request {
            session: session.id,
            kind: match query.kind {
                QueryKind::Read => Kind::Read,
                QueryKind::Write => Kind::Write,
                QueryKind::Ddl => Kind::Ddl,
                QueryKind::TransactionControl => Kind::TransactionControl,
                QueryKind::SessionControl => Kind::SessionControl,
                QueryKind::Unknown => Kind::Unknown,
            },
            read_only: session.read_only,
            last_commit_lsn: session.last_commit_lsn,
        };
        let nodes = nodes.iter().map(|n| Node {
            role: match n.role {
                WitRole::Primary => Role::Primary,
                WitRole::Replica => Role::Replica,
                WitRole::Unknown => Role::Unknown,
            },
            reachable: n.reachable,
            fenced: n.fenced,
            timeline: n.timeline,
            lsn: n.lsn,
        });
        let answer = Router::get().route(
            &request,
            || host::current_session().map(|d| d.application_name),
            nodes,
            host::monotonic_now_ns,
        );
        if let Some(event) = answer.event {
            host::counter_add(event.counter(), 1);
        }
        match answer.route {
            Route::Primary => RouteDecision::Primary,
            Route::AnyReplica => RouteDecision::AnyReplica,
            Route::Wait(ms) => RouteDecision::Wait(ms),
        }
    }
}
