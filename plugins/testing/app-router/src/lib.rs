//! A custom router as a user would write one, built by the test suite
//! (`tests/tests/routing.rs` swaps it in for the bundled router by hot reload): the reads of
//! sessions whose `application_name` is the setting `application` go to node `node` (an
//! index into the cluster's nodes); everything else goes to the primary.

use switchyard_plugin_kit::{Plugin, Settings};

switchyard_plugin_kit::plugin!(AppRouter, world = "router-plugin");

use bindings::exports::switchyard::policy::router::{Guest, RouteDecision};
use bindings::switchyard::policy::host;
use bindings::switchyard::policy::types::{NodeInfo, QueryInfo, QueryKind, SessionInfo};

struct AppRouter {
    application: String,
    node: u32,
}

impl Plugin for AppRouter {
    const NAME: &'static str = "testing-app-router";
    const SETTINGS: &'static [&'static str] = &["application", "node", "version_tag"];

    fn new(settings: &Settings<'_>) -> Result<AppRouter, String> {
        let application = settings
            .text("application")
            .ok_or("the setting application is required")?
            .to_owned();
        let node = settings
            .text("node")
            .ok_or("the setting node is required")?
            .parse()
            .map_err(|e| format!("node: {e}"))?;
        Ok(AppRouter { application, node })
    }

    fn describe(&self) -> String {
        format!("reads of {} go to node {}", self.application, self.node)
    }
}

impl Guest for AppRouter {
    fn route(_session: SessionInfo, query: QueryInfo, _nodes: Vec<NodeInfo>) -> RouteDecision {
        let me = AppRouter::get();
        let ours = host::current_session().is_some_and(|d| d.application_name == me.application);
        if ours && query.kind == QueryKind::Read {
            RouteDecision::Node(me.node)
        } else {
            RouteDecision::Primary
        }
    }
}
