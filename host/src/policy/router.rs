//! Built-in routing: which node runs a session's next transaction (the host-side twin of
//! the WIT `router` interface). The host classifies the work first; what it classified as
//! a write never reaches a replica whatever a router answers (the facade clamps it), so a
//! router only chooses among the places a read may go.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ReadRouting;
use crate::sql::route::Kind;

/// Where a transaction runs (the twin of the WIT `route-decision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// The confirmed primary (the pool holds the transaction while there is none).
    Primary,
    /// This node (an index into the cluster's nodes), if it may serve the read now;
    /// otherwise the host's choice as for [`Route::AnyReplica`].
    Node(usize),
    /// The least busy replica that may serve the read, or the primary if none may.
    AnyReplica,
    /// Ask again after this long (e.g. until a replica replays the session's last commit),
    /// within the session's hold budget.
    Wait(#[serde(with = "humantime_serde")] Duration),
    /// Refuse the work with this SQLSTATE and message.
    Reject { sqlstate: String, message: String },
}

/// The work a router decides about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RouteRequest {
    pub kind: Kind,
    /// Every rule of the host's classification lets a replica run it: a read-only
    /// statement or a transaction declared read-only. When false, the work goes to the
    /// primary whatever the router answers.
    pub replica_ok: bool,
    /// The session is inside a transaction block.
    pub in_transaction: bool,
    /// Where reads may go, from the session's hint or else the database's `read_routing`.
    pub read_routing: ReadRouting,
    /// The WAL position the session's reads must see (read-your-writes): 0 for none,
    /// `u64::MAX` while the position of its last commit is not known yet.
    pub last_commit_lsn: u64,
}

/// The built-in `router.route`: work a replica may run goes to a replica when the
/// database (or the session's hint) allows reads there; everything else to the primary.
pub fn route(request: &RouteRequest) -> Route {
    match request.read_routing {
        ReadRouting::Replicas | ReadRouting::ReplicasOrPrimary if request.replica_ok => Route::AnyReplica,
        _ => Route::Primary,
    }
}

/// The safety clamp on any router's answer: work the host did not classify as fit for a
/// replica runs on the primary.
pub fn clamp(request: &RouteRequest, route: Route) -> Route {
    match route {
        Route::Node(_) | Route::AnyReplica if !request.replica_ok => Route::Primary,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(replica_ok: bool, read_routing: ReadRouting) -> RouteRequest {
        RouteRequest {
            kind: if replica_ok { Kind::Read } else { Kind::Write },
            replica_ok,
            in_transaction: false,
            read_routing,
            last_commit_lsn: 0,
        }
    }

    #[test]
    fn the_built_in_sends_reads_to_replicas_only_when_routing_is_on() {
        assert_eq!(route(&request(true, ReadRouting::Off)), Route::Primary);
        assert_eq!(route(&request(true, ReadRouting::Replicas)), Route::AnyReplica);
        assert_eq!(
            route(&request(true, ReadRouting::ReplicasOrPrimary)),
            Route::AnyReplica
        );
        assert_eq!(route(&request(false, ReadRouting::Replicas)), Route::Primary);
    }

    #[test]
    fn no_answer_sends_a_write_to_a_replica() {
        let write = request(false, ReadRouting::Replicas);
        assert_eq!(clamp(&write, Route::Node(1)), Route::Primary);
        assert_eq!(clamp(&write, Route::AnyReplica), Route::Primary);
        assert_eq!(
            clamp(&write, Route::Wait(Duration::from_millis(5))),
            Route::Wait(Duration::from_millis(5))
        );
        let read = request(true, ReadRouting::Off);
        assert_eq!(clamp(&read, Route::Node(1)), Route::Node(1));
    }
}
